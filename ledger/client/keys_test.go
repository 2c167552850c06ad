package client

import (
	"context"
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// TestFollowKey: a principal rotates twice on a real ledger; a client
// asked about any of its keys follows the chain, each step checked in the
// log; a server that passes another entry off as a rotation is caught.
func TestFollowKey(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	e, err := ledger.OpenEmbedded(ctx, t.TempDir(), ledger.EmbeddedOptions{ChainID: "keys-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var lie atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if lie.Load() && strings.HasPrefix(r.URL.Path, "/v1/keys/") {
			rec := httptest.NewRecorder()
			e.Handler().ServeHTTP(rec, r)
			// Entry 0 is a note, not a rotation.
			w.Write([]byte(strings.Replace(rec.Body.String(), `"index":1,`, `"index":0,`, 1)))
			return
		}
		e.Handler().ServeHTTP(w, r)
	}))
	defer srv.Close()
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]ed25519.PrivateKey, 3)
	for i := range keys {
		_, keys[i], _ = ed25519.GenerateKey(nil)
	}
	pub := func(i int) ed25519.PublicKey { return keys[i].Public().(ed25519.PublicKey) }
	if _, err := c.Append(ctx, mustEntry(t, keys[0], "first")); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		se, err := verify.NewEntry(keys[i], ledger.KindKeyRotated, verify.NewKeyRotation(pub(i), keys[i+1]))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Append(ctx, se); err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
	}
	if _, err := c.Append(ctx, mustEntry(t, keys[0], "old key")); err == nil || !strings.Contains(err.Error(), "rotated") {
		t.Fatalf("the first key after its rotation: %v", err)
	}
	var cp *verify.Checkpoint
	state := filepath.Join(t.TempDir(), "st.json")
	for cp == nil || cp.Size < 3 {
		res, err := c.Verify(ctx, state, nil)
		if err != nil {
			t.Fatal(err)
		}
		cp = res.Checkpoint
		time.Sleep(100 * time.Millisecond)
	}
	for i := range 3 {
		kc, err := c.FollowKey(ctx, cp, pub(i))
		if err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
		if !kc.Principal.Equal(pub(0)) || !kc.Current.Equal(pub(2)) || len(kc.Rotations) != 2 || kc.Rotations[1].Index != 2 {
			t.Fatalf("key %d: %+v", i, kc)
		}
	}
	lie.Store(true)
	if _, err := c.FollowKey(ctx, cp, pub(1)); err == nil || !strings.Contains(err.Error(), "given as a rotation") {
		t.Fatalf("a note passed off as a rotation: %v", err)
	}
}
