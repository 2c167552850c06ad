package ledger

import (
	"context"
	"testing"
	"time"
)

func TestEmbeddedAppendProveCheckpoint(t *testing.T) {
	dir := t.TempDir()
	e := openTestEmbedded(t, dir)
	defer e.Close()
	c := serveAPI(t, e.Handler())
	key := newTestKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var receipts []Receipt
	for i := range 5 {
		se := signEntry(t, key, KindNote, map[string]any{"n": i})
		rc, err := e.Append(ctx, se)
		if err != nil {
			t.Fatal(err)
		}
		if rc.Index != uint64(i) || rc.Height < 1 || rc.LeafHash != LeafHash(se.Encode()) {
			t.Fatalf("receipt %d = %+v", i, rc)
		}
		receipts = append(receipts, rc)
	}
	cp := c.verifiedCheckpoint(5)
	for i := range receipts {
		if err := c.checkInclusion(uint64(i), cp); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
}
