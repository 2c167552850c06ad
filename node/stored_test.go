package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/blob"
	"github.com/cloisterhq/cloister/blob/server"
	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/internal/registrytest"
)

// blobStore starts a Cloister blob store holding data and returns its
// repository URL and its directory.
func blobStore(t *testing.T, data []byte) (string, string) {
	t.Helper()
	repo, dir, s := newBlobStore(t)
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, data, 0o600)
	if _, _, err := s.PushFile(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return repo, dir
}

// newBlobStore starts an empty Cloister blob store and returns its
// repository URL, its directory and a client allowed to push to it.
func newBlobStore(t *testing.T) (string, string, *blob.Store) {
	t.Helper()
	st := registrytest.StartStore(t, server.Options{})
	repo := st.URL + "/data"
	s, err := blob.OpenStore(repo, blob.Options{Key: st.Key})
	if err != nil {
		t.Fatal(err)
	}
	return repo, st.Dir, s
}

// storedPolicy makes carol's purchases.csv a stored input fetched from
// stores instead of an upload.
func storedPolicy(s *scenario, t *testing.T, platformKey string, stores []string) []byte {
	data := s.input(t, "purchases.csv")
	h := sha256hex(data)
	return s.policyDoc(t, platformKey, func(d map[string]any) {
		d["inputs"] = []any{
			map[string]any{"name": "customers.csv", "provider": "bob"},
			map[string]any{"name": "purchases.csv", "sha256": h, "from": map[string]any{"digest": "sha256:" + h, "stores": stores}},
		}
	})
}

func TestStoredInput(t *testing.T) {
	s := newScenario(t)
	data := s.input(t, "purchases.csv")
	good, _ := blobStore(t, data)
	bad, badDir := blobStore(t, data)
	// The second store's copy is altered: same size, other bytes.
	h := blob.FromBytes(data).Hex()
	altered := []byte(strings.Replace(string(data), "1", "2", 1))
	if err := os.WriteFile(filepath.Join(badDir, "blobs", "sha256", h[:2], h), altered, 0o600); err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	down := "http://" + ln.Addr().String() + "/data"
	ln.Close()

	tn := startNode(t, filepath.Join(t.TempDir(), "node"), nil)
	c := dial(t, tn)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s.warmPsiSum(t)

	run := func(stores []string) *cloisterv1.GetStatusResponse {
		as := createAttested(ctx, t, c, storedPolicy(s, t, tn.platformKey(), stores))
		if _, err := as.UploadInput(ctx, s.carol.key, "purchases.csv", data); err == nil || !strings.Contains(err.Error(), "fetched by the node") {
			t.Fatalf("uploading a stored input: %v", err)
		}
		if _, err := as.UploadProgram(ctx, s.alice.key, "psi-sum.wasm", s.prog.Wasm); err != nil {
			t.Fatal(err)
		}
		if _, err := as.UploadInput(ctx, s.bob.key, "customers.csv", s.input(t, "customers.csv")); err != nil {
			t.Fatal(err)
		}
		st, err := as.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.State == cloisterv1.SessionState_SESSION_STATE_FINISHED {
			got, err := as.Result(ctx, s.dave.key, "result.json")
			if err != nil || string(got) != string(s.output(t, "result.json")) {
				t.Fatalf("result %q, %v", got, err)
			}
		}
		return st
	}
	// Down, then tampered, then good: the run uses the good copy.
	if st := run([]string{down, bad, good}); st.State != cloisterv1.SessionState_SESSION_STATE_FINISHED {
		t.Fatalf("state %v: %s", st.State, st.Reason)
	}
	// Without a good copy anywhere, the run fails and says why, per store.
	tn2 := startNode(t, filepath.Join(t.TempDir(), "node2"), nil) // an empty cache
	c = dial(t, tn2)
	tn = tn2
	st := run([]string{down, bad})
	if st.State != cloisterv1.SessionState_SESSION_STATE_FAILED || !strings.Contains(st.Reason, "does not match its digest") || !strings.Contains(st.Reason, "connection refused") {
		t.Fatalf("state %v: %s", st.State, st.Reason)
	}
}

func TestPinnedUpload(t *testing.T) {
	s := newScenario(t)
	tn := startNode(t, filepath.Join(t.TempDir(), "node"), nil)
	c := dial(t, tn)
	ctx := context.Background()
	doc := s.policyDoc(t, tn.platformKey(), func(d map[string]any) {
		d["inputs"].([]any)[0].(map[string]any)["sha256"] = sha256hex([]byte("the agreed customer list"))
	})
	as := createAttested(ctx, t, c, doc)
	_, err := as.UploadInput(ctx, s.bob.key, "customers.csv", s.input(t, "customers.csv"))
	if err == nil || !strings.Contains(err.Error(), "program-hash") || !strings.Contains(err.Error(), `input "customers.csv" has SHA-256`) {
		t.Fatalf("upload of other bytes than pinned: %v", err)
	}
	if _, err := as.UploadInput(ctx, s.bob.key, "customers.csv", []byte("the agreed customer list")); err != nil {
		t.Fatalf("upload of the pinned bytes: %v", err)
	}
}

// TestStoredDirectory: a policy pins a directory (its manifest's digest);
// the node fetches the manifest and each file from a store, and the guest
// (the sha256sum example) lists /input/model and reads every file in it.
func TestStoredDirectory(t *testing.T) {
	s := newScenario(t)
	weights := bytes.Repeat([]byte("0123456789abcdef"), 40_000)
	cfg := []byte(`{"layers": 12}`)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "weights.bin"), weights, 0o644)
	os.WriteFile(filepath.Join(src, "config.json"), cfg, 0o644)
	repo, _, st := newBlobStore(t)
	md, err := st.PushDir(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}

	tn := startNode(t, filepath.Join(t.TempDir(), "node"), nil)
	c := dial(t, tn)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	prog := examples.SHA256Sum()
	doc := s.policyDoc(t, tn.platformKey(), func(d map[string]any) {
		d["name"] = "model-digests"
		d["programs"] = []any{map[string]any{"name": "sha256sum.wasm", "sha256": sha256hex(prog), "provider": "alice"}}
		d["inputs"] = []any{
			map[string]any{"name": "model", "sha256": md.Hex(), "from": map[string]any{"digest": string(md), "directory": true, "stores": []string{repo}}},
			map[string]any{"name": "notes.txt", "provider": "bob"},
		}
		d["outputs"] = []any{map[string]any{"name": "sha256.json", "readers": []string{"dave"}}}
	})
	as := createAttested(ctx, t, c, doc)
	if _, err := as.UploadProgram(ctx, s.alice.key, "sha256sum.wasm", prog); err != nil {
		t.Fatal(err)
	}
	if _, err := as.UploadInput(ctx, s.bob.key, "notes.txt", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	status, err := as.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if status.State != cloisterv1.SessionState_SESSION_STATE_FINISHED {
		t.Fatalf("state %v: %s", status.State, status.Reason)
	}
	got, err := as.Result(ctx, s.dave.key, "sha256.json")
	if err != nil {
		t.Fatal(err)
	}
	var ds []struct {
		Name   string `json:"name"`
		Bytes  int    `json:"bytes"`
		SHA256 string `json:"sha256"`
	}
	if err := json.Unmarshal(got, &ds); err != nil {
		t.Fatalf("sha256.json: %v: %s", err, got)
	}
	want := []string{"model/config.json " + sha256hex(cfg), "model/weights.bin " + sha256hex(weights), "notes.txt " + sha256hex([]byte("v2"))}
	if len(ds) != len(want) {
		t.Fatalf("the guest hashed %+v, want %q", ds, want)
	}
	for i, d := range ds {
		if d.Name+" "+d.SHA256 != want[i] {
			t.Fatalf("the guest hashed %+v, want %q", ds, want)
		}
	}
}
