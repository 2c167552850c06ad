package node

import (
	"context"
	"encoding/json"
	"testing"
	"time"
)

// gatedLog holds every append until its gate opens (a ledger slow to
// commit), then records like numberedLog in mode "up", or fails ("down").
type gatedLog struct {
	numberedLog
	gate chan struct{}
}

func (l *gatedLog) RecordNumbered(ctx context.Context, kind string, body json.RawMessage, number uint64) (uint64, error) {
	select {
	case <-l.gate:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return l.numberedLog.RecordNumbered(ctx, kind, body, number)
}

// TestSealedRunWaitsForSessionCreated: a sealed program's run asks the
// brokers only once the session's session.created entry is on the ledger
// (the ledger refuses a release for a session it does not hold); while
// the entry is still being appended the run waits for it, and an entry
// that failed stops the run with a reason instead of a broker's refusal.
func TestSealedRunWaitsForSessionCreated(t *testing.T) {
	for _, mode := range []string{"up", "down"} {
		t.Run(mode, func(t *testing.T) {
			log := &gatedLog{numberedLog: numberedLog{mode: mode, byNumber: map[uint64]string{}}, gate: make(chan struct{})}
			n := newInternalNode(t, t.TempDir(), log)
			is := newInternalSession(t, n, "sum.wasm")
			type result struct {
				ok  bool
				err error
			}
			got := make(chan result, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				ok, err := is.s.awaitRecorded(ctx, 0)
				got <- result{ok, err}
			}()
			select {
			case r := <-got:
				t.Fatalf("returned %+v while session.created was still being appended", r)
			case <-time.After(200 * time.Millisecond):
			}
			close(log.gate)
			var r result
			select {
			case r = <-got:
			case <-time.After(time.Minute):
				t.Fatal("still waiting a minute after the entry was appended")
			}
			if r.err != nil || r.ok != (mode == "up") {
				t.Fatalf("awaitRecorded: %v, %v; want on the log: %v", r.ok, r.err, mode == "up")
			}
			if mode == "up" {
				is.s.mu.Lock()
				idx := is.s.rec.Events[0].LedgerIndex
				is.s.mu.Unlock()
				if idx == 0 {
					t.Fatal("awaitRecorded returned before the index was noted")
				}
			}
		})
	}
}
