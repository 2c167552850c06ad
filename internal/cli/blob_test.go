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

// TestPushKeyForms: --push-key takes the key itself, a file holding it
// (what 'cloister key public' prints, or the key file), each with an
// optional =QUOTA; anything else is refused naming the flag.
func TestPushKeyForms(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "alice.key")
	if code, _, stderr := runCLI(t, "key", "new", "--out", keyFile); code != ExitOK {
		t.Fatalf("key new: %s", stderr)
	}
	k, err := keys.Load(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	want := k.Public().SigningString()
	_, pub, _ := runCLI(t, "key", "public", keyFile)
	pubFile := filepath.Join(dir, "alice.pub")
	if err := os.WriteFile(pubFile, []byte(pub), 0o644); err != nil {
		t.Fatal(err)
	}
	var l storeLimitFlags
	l.maxBlob, l.maxTotal, l.quota = "1MiB", "2MiB", "1MiB"
	for _, c := range []struct {
		arg   string
		quota int64
	}{{want, 0}, {want + "=64KiB", 64 << 10}, {pubFile, 0}, {pubFile + "=2KiB", 2 << 10}, {keyFile, 0}} {
		o, err := l.options(dir, []string{c.arg})
		if err != nil {
			t.Errorf("--push-key %s: %v", c.arg, err)
			continue
		}
		if q, ok := o.Pushers[want]; !ok || q != c.quota || len(o.Pushers) != 1 {
			t.Errorf("--push-key %s: pushers %v, want %s with quota %d", c.arg, o.Pushers, want, c.quota)
		}
	}
	for _, bad := range []string{"ed25519:AAAA", filepath.Join(dir, "missing.pub"), filepath.Join(dir, "alice.key") + "=lots"} {
		if _, err := l.options(dir, []string{bad}); err == nil || !strings.Contains(err.Error(), "--push-key") {
			t.Errorf("--push-key %s: %v, want a refusal naming the flag", bad, err)
		}
	}
}
