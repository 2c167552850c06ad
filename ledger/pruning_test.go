package ledger

import (
	"context"
	"testing"
	"time"
)

// TestPruning: a ledger that retains 2 blocks lets CometBFT prune the
// blocks whose entries a checkpoint covers — never a block holding an
// entry no checkpoint covers —, still serves every entry with its proof,
// and reopens and commits after pruning.
func TestPruning(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open := func() *Embedded {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		e, err := OpenEmbedded(ctx, dir, EmbeddedOptions{Logger: testLogger(t), RetainBlocks: 2})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := open()
	ctx := context.Background()
	key := newTestKey(t)
	for i := range 4 {
		if _, err := e.Append(ctx, signEntry(t, key, KindNote, map[string]any{"n": i})); err != nil {
			t.Fatal(err)
		}
	}
	c := serveAPI(t, e.Handler())
	cp := c.verifiedCheckpoint(4)
	// The pruner runs every 10 s.
	bs := e.ln.node.BlockStore()
	deadline := time.Now().Add(40 * time.Second)
	for bs.Base() <= 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no block pruned within 40 s: base %d, height %d", bs.Base(), bs.Height())
		}
		time.Sleep(200 * time.Millisecond)
	}
	st, _ := e.ln.app.state()
	var last int64
	e.ln.store.view(func(r reader) error {
		last, _, _ = r.entry(st.CheckpointSize - 1)
		return nil
	})
	if base := bs.Base(); base > last+1 || base > bs.Height()-2 {
		t.Fatalf("pruned to base %d: the last covered entry is in block %d, the chain is at %d", base, last, bs.Height())
	}
	for i := range uint64(4) {
		if err := c.checkInclusion(i, cp); err != nil {
			t.Fatalf("entry %d after pruning: %v", i, err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = open()
	defer e.Close()
	if rc, err := e.Append(ctx, signEntry(t, key, KindNote, map[string]any{"n": "after"})); err != nil || rc.Index != 4 {
		t.Fatalf("after reopening: %+v %v", rc, err)
	}
}
