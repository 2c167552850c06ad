package ledger

import (
	"context"
	"crypto/ed25519"
	"strconv"
	"syscall"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// benchChain is a one-validator chain at the latest rules (LatestRules), driven through
// ABCI with no consensus engine, and n entries signed for it before the
// clock starts: what a validator's application does per entry, alone.
//
// batch > 1 signs the entries in batches of that many per submitter
// (decision 0175), each batch a fresh signature: the body names the run,
// so no batch signature is remembered from an earlier run.
func benchChain(b *testing.B, n, batch int) (*abciChain, [][]byte) {
	t0 := time.Now().UTC().Truncate(time.Second)
	c, err := newABCIChain(b, "checktx-bench", []byte(`{"rules_version":`+strconv.Itoa(LatestRules)+`}`), []ed25519.PrivateKey{seedKey(0x42)}, t0)
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]ed25519.PrivateKey, 64)
	for i := range keys {
		keys[i] = seedKey(byte(i + 1))
	}
	run := time.Now().UnixNano()
	body := func(i int) map[string]any {
		return map[string]any{"seq": i, "run": run, "text": "session=8f2c1a7e4b9d; event=session.created; policy=3b1f9a0c52e7d4a8b6c0e1f2a3b4c5d6e7f8091a2b3c4d5e6f70819"}
	}
	txs := make([][]byte, 0, n)
	if batch <= 1 {
		for i := range n {
			se, err := verify.NewEntryWithNonce(keys[i%len(keys)], KindNote, body(i), uint64(i), t0)
			if err != nil {
				b.Fatal(err)
			}
			txs = append(txs, se.Encode())
		}
		return c, txs
	}
	for lo := 0; lo < n; lo += batch {
		items := make([]verify.BatchItem, min(batch, n-lo))
		for j := range items {
			items[j] = verify.BatchItem{Kind: KindNote, Body: body(lo + j), Nonce: uint64(lo + j), Time: t0}
		}
		ses, err := verify.SignBatch(keys[(lo/batch)%len(keys)], items)
		if err != nil {
			b.Fatal(err)
		}
		for _, se := range ses {
			txs = append(txs, se.Encode())
		}
	}
	return c, txs
}

// benchForms are the entries' forms the benchmarks compare: signed alone,
// and batch-signed in batches of 16 and 64.
var benchForms = []struct {
	name  string
	batch int
}{{"", 1}, {"batch16", 16}, {"batch64", 64}}

func formName(base, form string) string {
	if form == "" {
		return base
	}
	return base + "-" + form
}

// BenchmarkCheckTx is one validator's CheckTx per new entry: decoding,
// the signature, the state's checks. "verified" is the same with the
// signature already checked (a batch's entries, verified on every CPU
// before they reach the mempool).
func BenchmarkCheckTx(b *testing.B) {
	for _, f := range benchForms {
		for _, pre := range []bool{false, true} {
			name := "new"
			if pre {
				name = "verified"
			}
			b.Run(formName(name, f.name), func(b *testing.B) { checkTxBench(b, f.batch, pre) })
		}
	}
}

func checkTxBench(b *testing.B, batch int, pre bool) {
	c, txs := benchChain(b, b.N, batch)
	if pre {
		c.a.preverify(txs)
	}
	ctx := context.Background()
	b.ResetTimer()
	defer reportCPU(b, b.N)()
	for i := range b.N {
		r, err := c.a.CheckTx(ctx, &abci.CheckTxRequest{Tx: txs[i], Type: abci.CHECK_TX_TYPE_CHECK})
		if err != nil || r.Code != abci.CodeTypeOK {
			b.Fatalf("CheckTx: %v %+v", err, r)
		}
	}
}

// BenchmarkFinalizeBlock is FinalizeBlock and Commit per entry, blocks of
// 500, for entries that passed this validator's CheckTx ("checked") and
// for entries it never saw (a proposer's own, or a byzantine one's).
func BenchmarkFinalizeBlock(b *testing.B) {
	for _, f := range benchForms {
		for _, checked := range []bool{true, false} {
			name := "unseen"
			if checked {
				name = "checked"
			}
			b.Run(formName(name, f.name), func(b *testing.B) { finalizeBench(b, f.batch, checked) })
		}
	}
}

func finalizeBench(b *testing.B, batch int, checked bool) {
	const per = 500
	n := (b.N + per - 1) / per * per
	c, txs := benchChain(b, n, batch)
	ctx := context.Background()
	if checked {
		for _, tx := range txs {
			if r, err := c.a.CheckTx(ctx, &abci.CheckTxRequest{Tx: tx, Type: abci.CHECK_TX_TYPE_CHECK}); err != nil || r.Code != abci.CodeTypeOK {
				b.Fatalf("CheckTx: %v %+v", err, r)
			}
		}
	}
	b.ResetTimer()
	defer reportCPU(b, n)()
	for i := 0; i < n; i += per {
		h := c.height + 1
		res, err := c.a.FinalizeBlock(ctx, &abci.FinalizeBlockRequest{Height: h, Time: c.at(h), Txs: txs[i : i+per]})
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res.TxResults {
			if r.Code != abci.CodeTypeOK {
				b.Fatalf("height %d: %s", h, r.Log)
			}
		}
		if _, err := c.a.Commit(ctx, &abci.CommitRequest{}); err != nil {
			b.Fatal(err)
		}
		c.height = h
	}
}

// reportCPU reports the process's CPU time (user and system, every
// thread) per entry from now until the returned function is called: on a
// shared machine, the figure that does not depend on what else runs.
func reportCPU(b *testing.B, entries int) func() {
	t0 := cpuTime(b)
	return func() {
		b.ReportMetric(float64((cpuTime(b)-t0).Nanoseconds())/1e3/float64(entries), "cpu-µs/entry")
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
