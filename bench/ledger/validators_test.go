package ledgerbench

import (
	"fmt"
	"testing"
)

// BenchmarkValidatorCount measures how commit latency grows with the size
// of a consortium: n validators (n = 4 … 7, power 1 each, every one its own
// process on loopback, as 'cloister ledger start' runs them), one entry at
// a time posted over HTTP to the first validator, from submit to committed
// receipt, on an otherwise idle chain. Operation = one entry; run with
// -benchtime=200x. docs/deploy.md extrapolates from these figures to 20 and
// 100 organisations. On one machine every validator shares its cores and
// loopback has no latency, so the figures measure the protocol's rounds and
// the validators' CPU, not wide-area network delay.
func BenchmarkValidatorCount(b *testing.B) {
	if testing.Short() {
		b.Skip("starts testnets of 4 to 7 validator processes; skipped under -short")
	}
	for _, n := range []int{4, 5, 6, 7} {
		b.Run(fmt.Sprintf("validators-%d", n), func(b *testing.B) {
			t := startTestnet(b, b.TempDir(), n, true)
			defer t.close()
			t.settle()
			s := newSigners(b, 16)
			cpu0 := t.cpu()
			latency(b, s, t.clients[0], nil)
			b.ReportMetric(float64((t.cpu()-cpu0).Microseconds())/float64(b.N), "cpu-µs/entry")
		})
	}
}
