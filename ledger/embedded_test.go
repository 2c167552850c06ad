package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/ledger/verify"
)

func TestEmbeddedAppendProveCheckpoint(t *testing.T) {
	// An hour between empty blocks: the checkpoint covering the last
	// entry can only come from the blocks ticks ask for (no wall-clock
	// bound that a loaded machine could exceed). Not parallel: no other
	// chain is opened meanwhile.
	own := emptyBlockInterval
	emptyBlockInterval = time.Hour
	t.Cleanup(func() { emptyBlockInterval = own })
	dir := t.TempDir()
	e := openTestEmbedded(t, dir)
	defer e.Close()
	c := serveAPI(t, e.Handler())
	key := newTestKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var receipts []verify.Receipt
	for i := range 5 {
		se := signEntry(t, key, KindNote, map[string]any{"n": i})
		rc, err := e.Append(ctx, se)
		if err != nil {
			t.Fatal(err)
		}
		if rc.Index != uint64(i) || rc.Height < 1 || rc.LeafHash != verify.LeafHash(se.Encode()) {
			t.Fatalf("receipt %d = %+v", i, rc)
		}
		receipts = append(receipts, rc)
	}
	// Ticks make the blocks that publish the checkpoint at once, not
	// after the empty-block interval (an hour here).
	cp := c.verifiedCheckpoint(5)
	// An idle chain makes (almost) no blocks.
	st0, _ := e.ln.app.state()
	time.Sleep(time.Second)
	if st1, _ := e.ln.app.state(); st1.Height > st0.Height+1 {
		t.Errorf("idle chain went from height %d to %d in 1s", st0.Height, st1.Height)
	}
	for i := range receipts {
		if err := c.checkInclusion(uint64(i), cp); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
}

// TestEmbeddedLocked: a second open of the same directory fails clearly
// instead of corrupting the first.
func TestEmbeddedLocked(t *testing.T) {
	dir := t.TempDir()
	e := openTestEmbedded(t, dir)
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := OpenEmbedded(ctx, dir, EmbeddedOptions{})
	if err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second open: %v", err)
	}
	// The first one still works.
	if _, err := e.Append(ctx, signEntry(t, newTestKey(t), KindNote, map[string]any{})); err != nil {
		t.Fatal(err)
	}
}

// TestWaitersReleasedOnStop: an Append waiting for its commit when the
// node stops returns verify.ErrUnavailable instead of waiting forever.
func TestWaitersReleasedOnStop(t *testing.T) {
	w := newWaiters()
	p := &pendingTx{hash: [32]byte{1}}
	p.ch = w.add(p.hash)
	go w.closeAll(fmt.Errorf("%w: stopped", verify.ErrUnavailable))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.wait(ctx); !errors.Is(err, verify.ErrUnavailable) || ctx.Err() != nil {
		t.Fatalf("wait after stop: %v", err)
	}
}
