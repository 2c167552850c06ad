package client

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// The client against the real thing: an embedded single-validator ledger
// (CometBFT, vote-extension cosigning) serving its HTTP API.
func TestAgainstEmbeddedLedger(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	e, err := ledger.OpenEmbedded(ctx, t.TempDir(), ledger.EmbeddedOptions{ChainID: "client-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	srv := httptest.NewServer(e.Handler())
	defer srv.Close()
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(nil)
	var last verify.Receipt
	for i := range 3 {
		se, err := verify.NewEntry(key, ledger.KindNote, map[string]any{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		if last, err = c.Append(ctx, se); err != nil {
			t.Fatal(err)
		}
		if last.Index != uint64(i) {
			t.Fatalf("entry %d got index %d", i, last.Index)
		}
		if i == 0 {
			// The same entry again is a replay, refused by the state machine.
			_, err := c.Append(ctx, se)
			if r, ok := IsRejected(err); !ok || r.Code != "replay" {
				t.Fatalf("replay: %v", err)
			}
		}
	}
	res, err := c.AppendBatch(ctx, []*verify.SignedEntry{mustEntry(t, key, "b1"), mustEntry(t, key, "b2")}, true)
	if err != nil || res[0].Err != nil || res[1].Receipt.Index != 4 {
		t.Fatalf("batch: %+v %v", res, err)
	}
	if res, err = c.AppendBatch(ctx, []*verify.SignedEntry{mustEntry(t, key, "b3")}, false); err != nil || !res[0].Admitted || res[0].Err != nil {
		t.Fatalf("batch without wait: %+v %v", res, err)
	}

	got, err := c.Get(ctx, 1)
	if err != nil || got.Height < 1 || got.Signed.Entry.Kind != ledger.KindNote {
		t.Fatalf("Get: %+v %v", got, err)
	}
	if _, err := c.Get(ctx, 1000); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(1000): %v", err)
	}
	page, err := c.Entries(ctx, 0, 1000)
	if err != nil || len(page.Entries) < 5 {
		t.Fatalf("Entries: %v %v", page, err)
	}

	// Checkpoints trail commits by a couple of blocks.
	path := statePath(t)
	var vr *VerifyResult
	for {
		vr, err = c.Verify(ctx, path, u64(4))
		if err == nil {
			break
		}
		if !errors.Is(err, verify.ErrNotIncluded) || ctx.Err() != nil {
			t.Fatalf("Verify: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !vr.FirstUse || vr.Checkpoint.Size < 5 || len(vr.Checkpoint.Signers) != 1 || vr.Entry.Index != 4 {
		t.Fatalf("verify result %+v", vr)
	}
	st, err := c.Status(ctx)
	if err != nil || st.ChainID != "client-test" || st.Size < vr.Checkpoint.Size {
		t.Fatalf("Status: %+v %v", st, err)
	}
	// A later verification proves consistency with the pinned checkpoint.
	if _, err := c.Append(ctx, mustEntry(t, key, "later")); err != nil {
		t.Fatal(err)
	}
	for {
		vr2, err := c.Verify(ctx, path, nil)
		if err != nil {
			t.Fatalf("second Verify: %v", err)
		}
		if vr2.Previous.Size == vr.Checkpoint.Size && vr2.Checkpoint.Size > vr.Checkpoint.Size {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no newer checkpoint")
		}
		time.Sleep(200 * time.Millisecond)
		vr = vr2
	}
}

func mustEntry(t *testing.T, key ed25519.PrivateKey, s string) *verify.SignedEntry {
	t.Helper()
	se, err := verify.NewEntry(key, ledger.KindNote, map[string]any{"s": s})
	if err != nil {
		t.Fatal(err)
	}
	return se
}
