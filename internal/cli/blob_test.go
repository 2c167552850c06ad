package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/blob"
	"github.com/cloisterhq/cloister/blob/server"
	"github.com/cloisterhq/cloister/internal/registrytest"
	"github.com/cloisterhq/cloister/keys"
)

func TestBlobPutGet(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "alice.key")
	if code, _, stderr := runCLI(t, "key", "new", "--out", keyFile); code != ExitOK {
		t.Fatal(stderr)
	}
	k, _ := keys.Load(keyFile)
	ts := registrytest.StartStore(t, server.Options{Pushers: map[string]int64{k.Public().SigningString(): 0}})
	ours := ts.URL + "/models"
	real := registrytest.Start(t) + "/models"

	data := []byte(strings.Repeat("model weights ", 5000))
	file := filepath.Join(dir, "w.bin")
	os.WriteFile(file, data, 0o644)
	want := string(blob.FromBytes(data))

	// Unsigned pushes to a Cloister store are refused; signed ones land.
	if code, _, stderr := runCLI(t, "blob", "put", file, "--store", ours); code != ExitFailure || !strings.Contains(stderr, "signed") {
		t.Fatalf("unsigned put: exit %d %s", code, stderr)
	}
	for _, store := range []string{ours, real} {
		code, stdout, stderr := runCLI(t, "blob", "put", file, "--store", store, "--key", keyFile)
		if code != ExitOK || strings.TrimSpace(stdout) != want {
			t.Fatalf("put to %s: exit %d %q %s", store, code, stdout, stderr)
		}
	}
	// get: a store that is down, then a store without the blob, then one
	// with it.
	for i, store := range []string{ours, real} {
		out := filepath.Join(dir, "got"+string(rune('0'+i)))
		code, _, stderr := runCLI(t, "blob", "get", want, "--store", "http://127.0.0.1:1/models", "--store", ts.URL+"/empty-but-shared",
			"--store", store, "--out", out)
		if code != ExitOK {
			t.Fatalf("get from %s: exit %d %s", store, code, stderr)
		}
		if b, _ := os.ReadFile(out); string(b) != string(data) {
			t.Fatalf("get from %s: wrong bytes", store)
		}
	}
	missing := string(blob.FromBytes([]byte("nope")))
	code, _, stderr := runCLI(t, "blob", "get", missing, "--store", ours, "--store", real, "--out", filepath.Join(dir, "missing"))
	if code != ExitFailure || strings.Count(stderr, "blob not found") != 2 {
		t.Fatalf("missing blob: exit %d %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !os.IsNotExist(err) {
		t.Fatal("failed get left a file")
	}
	if code, _, _ := runCLI(t, "blob", "get", "md5:00", "--store", ours, "--out", filepath.Join(dir, "x")); code != ExitUsage {
		t.Fatalf("bad digest: exit %d", code)
	}
	// A directory prints its manifest's digest.
	dd := filepath.Join(dir, "ds")
	os.Mkdir(dd, 0o755)
	os.WriteFile(filepath.Join(dd, "a"), []byte("a"), 0o644)
	code, stdout, stderr := runCLI(t, "blob", "put", dd, "--store", ours, "--key", keyFile)
	if code != ExitOK {
		t.Fatalf("put dir: %s", stderr)
	}
	m, _ := blob.DirManifest([]blob.DirEntry{{Name: "a", Digest: blob.FromBytes([]byte("a")), Size: 1}})
	if strings.TrimSpace(stdout) != string(blob.FromBytes(m)) {
		t.Fatalf("put dir printed %q, want the manifest digest %s", stdout, blob.FromBytes(m))
	}
}
