package witness_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/ledger/witness"
)

func open(t *testing.T, dir string) (*ledger.Embedded, *client.Client, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e, err := ledger.OpenEmbedded(ctx, dir, ledger.EmbeddedOptions{ChainID: "witness-test"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e.Handler())
	t.Cleanup(func() { srv.Close(); e.Close() })
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return e, c, srv.URL
}

func appendNotes(t *testing.T, c *client.Client, key ed25519.PrivateKey, text string, n int) {
	t.Helper()
	for range n {
		se, err := verify.NewEntry(key, "note", map[string]any{"text": text})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Append(context.Background(), se); err != nil {
			t.Fatal(err)
		}
	}
}

// waitCheckpoint waits (bounded) until the ledger's checkpoint covers n entries.
func waitCheckpoint(t *testing.T, c *client.Client, n uint64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		cp, err := c.Checkpoint(context.Background())
		if err == nil && cp.Size >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of %d entries within 60s (%v)", n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestWitnessCatchesSplitView: the ledger's validators (here its one
// validator, copied) sign two histories that share a prefix; a witness
// following the first cosigns it, a client requiring the witness accepts
// the first and is refused the second, and the witness keeps evidence of
// the fork. Without the witness the second client would have accepted it.
func TestWitnessCatchesSplitView(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	dir := t.TempDir()
	d1, d2 := filepath.Join(dir, "honest"), filepath.Join(dir, "fork")
	e1, c1, _ := open(t, d1)
	appendNotes(t, c1, key, "shared", 5)
	waitCheckpoint(t, c1, 5)
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	// The colluding copy: same keys, same chain, same first five entries.
	if out, err := exec.Command("cp", "-a", d1, d2).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	_, c1, url1 := open(t, d1)
	_, c2, url2 := open(t, d2)
	appendNotes(t, c1, key, "honest", 3)
	appendNotes(t, c2, key, "forked", 3)
	waitCheckpoint(t, c1, 8)
	waitCheckpoint(t, c2, 8)

	g, err := c1.Genesis(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	follow, _ := client.New(url1, client.WithGenesis(g.Hash()))
	_, wkey, _ := ed25519.GenerateKey(nil)
	wdir := t.TempDir()
	w, err := witness.New(witness.Config{Ledger: follow, Key: wkey, Dir: wdir})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	wsrv := httptest.NewServer(w.Handler())
	defer wsrv.Close()
	vkey := w.VerifierKey()

	// The client shown the honest history gets it cosigned.
	a, err := client.New(url1, client.WithGenesis(g.Hash()), client.WithWitness(wsrv.URL, vkey))
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Verify(context.Background(), filepath.Join(t.TempDir(), "a.json"), nil)
	if err != nil || res.Witness != witness.DefaultName(wkey.Public().(ed25519.PublicKey)) {
		t.Fatalf("honest client: %+v %v", res, err)
	}
	wid, _ := verify.ParseWitnessKey(vkey)
	if _, err := verify.CheckCosignature(res.Checkpoint.Note, wid); err != nil {
		t.Fatalf("the accepted checkpoint lacks the cosignature: %v", err)
	}

	// Without a witness, the forked history verifies: its signatures are
	// the validators' own.
	plain, _ := client.New(url2, client.WithGenesis(g.Hash()))
	if _, err := plain.Verify(context.Background(), filepath.Join(t.TempDir(), "plain.json"), nil); err != nil {
		t.Fatalf("the fork without a witness: %v", err)
	}
	// Requiring the witness, it is refused, and the witness keeps evidence.
	b, _ := client.New(url2, client.WithGenesis(g.Hash()), client.WithWitness(wsrv.URL, vkey))
	_, err = b.Verify(context.Background(), filepath.Join(t.TempDir(), "b.json"), nil)
	if !errors.Is(err, verify.ErrWitness) || !strings.Contains(err.Error(), "fork") {
		t.Fatalf("forked client with the witness: %v", err)
	}
	t.Logf("refused as expected: %v", err)
	if w.Forks() != 1 {
		t.Fatalf("witness holds %d fork records", w.Forks())
	}
	resp, err := http.Get(wsrv.URL + "/forks")
	if err != nil {
		t.Fatal(err)
	}
	var forks []struct{ Cosigned, Offending string }
	json.NewDecoder(resp.Body).Decode(&forks)
	resp.Body.Close()
	if len(forks) != 1 || forks[0].Cosigned == forks[0].Offending || !strings.Contains(forks[0].Offending, "witness-test") {
		t.Fatalf("fork evidence: %+v", forks)
	}

	// A checkpoint not signed by the validators is refused (403), and a
	// restarted witness still holds what it cosigned.
	r, _ := http.Post(wsrv.URL+"/add-checkpoint", "text/plain", bytes.NewReader(client.AddCheckpointBody(0, nil, []byte("witness-test\n1\nAAAA\n\n"))))
	if r.StatusCode != http.StatusForbidden && r.StatusCode != http.StatusBadRequest {
		t.Fatalf("unsigned checkpoint: %d", r.StatusCode)
	}
	r.Body.Close()
	w2, err := witness.New(witness.Config{Ledger: follow, Key: wkey, Dir: wdir})
	if err != nil || !bytes.Equal(w2.Latest(), w.Latest()) {
		t.Fatalf("reopened witness: %v", err)
	}
	if _, err := os.Stat(filepath.Join(wdir, "checkpoint")); err != nil {
		t.Fatal(err)
	}
}
