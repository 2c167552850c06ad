package ledger

import (
	"context"
	"fmt"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// TestEmbeddedRestart closes and reopens an embedded ledger: every entry
// stays provable against the checkpoints from before and after, the new
// tree extends the old one, and appending continues where it stopped.
func TestEmbeddedRestart(t *testing.T) {
	dir := t.TempDir()
	key := newTestKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	e := openTestEmbedded(t, dir)
	chain := e.ChainID()
	c := serveAPI(t, e.Handler())
	for i := range 20 {
		if _, err := e.Append(ctx, signEntry(t, key, KindNote, map[string]any{"i": i})); err != nil {
			t.Fatal(err)
		}
	}
	cp1 := c.verifiedCheckpoint(20)
	var vals1 validatorsJSON
	c.getJSON("/v1/validators", &vals1)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e = openTestEmbedded(t, dir)
	defer e.Close()
	if e.ChainID() != chain {
		t.Fatalf("chain id changed across restart: %s -> %s", chain, e.ChainID())
	}
	c = serveAPI(t, e.Handler())
	var vals2 validatorsJSON
	c.getJSON("/v1/validators", &vals2)
	if fmt.Sprint(vals1) != fmt.Sprint(vals2) {
		t.Fatalf("validator set changed across restart:\n%v\n%v", vals1, vals2)
	}
	// The old checkpoint is still served, byte for byte verifiable.
	status, b := c.do("GET", fmt.Sprintf("/v1/checkpoint?size=%d", cp1.Size), nil)
	if status != 200 {
		t.Fatalf("old checkpoint: %d %s", status, b)
	}
	if got, err := openCheckpoint(b, vals2); err != nil || got != cp1 {
		t.Fatalf("old checkpoint after restart: %+v %v, want %+v", got, err, cp1)
	}
	for i := range cp1.Size {
		if err := c.checkInclusion(i, cp1); err != nil {
			t.Fatalf("entry %d against the checkpoint from before the restart: %v", i, err)
		}
	}
	rc, err := e.Append(ctx, signEntry(t, key, KindNote, map[string]any{"after": true}))
	if err != nil {
		t.Fatal(err)
	}
	if rc.Index != cp1.Size {
		t.Fatalf("first index after restart %d, want %d", rc.Index, cp1.Size)
	}
	cp2 := c.verifiedCheckpoint(cp1.Size + 1)
	for i := range cp2.Size {
		if err := c.checkInclusion(i, cp2); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	checkConsistency(t, c, cp1, cp2)
}

func checkConsistency(t *testing.T, c *apiClient, old, new logHead) {
	t.Helper()
	var p struct {
		Hashes [][]byte `json:"hashes"`
	}
	c.getJSON(fmt.Sprintf("/v1/proof/consistency?from=%d&to=%d", old.Size, new.Size), &p)
	proof := make(tlog.TreeProof, len(p.Hashes))
	for i, h := range p.Hashes {
		copy(proof[i][:], h)
	}
	if err := tlog.CheckTree(proof, int64(new.Size), new.Root, int64(old.Size), old.Root); err != nil {
		t.Fatalf("consistency %d -> %d: %v", old.Size, new.Size, err)
	}
}
