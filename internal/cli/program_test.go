package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProgramSealOpen(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "prog.wasm")
	data := []byte(strings.Repeat("cloister program bytes ", 10000))
	os.WriteFile(plain, data, 0o644)
	out := filepath.Join(dir, "prog.sealed")

	code, stdout, stderr := runCLI(t, "program", "seal", plain, "--out", out, "--json")
	if code != ExitOK {
		t.Fatalf("seal: exit %d: %s", code, stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || len(got) != 3 {
		t.Fatalf("seal --json printed %q (%v), want exactly sha256, digest, size", stdout, err)
	}
	ct, _ := os.ReadFile(out)
	ps, cs := sha256.Sum256(data), sha256.Sum256(ct)
	if got["sha256"] != hex.EncodeToString(ps[:]) || got["digest"] != "sha256:"+hex.EncodeToString(cs[:]) || got["size"] != float64(len(ct)) {
		t.Fatalf("seal --json = %v, want plaintext %x, ciphertext sha256:%x, size %d", got, ps, cs, len(ct))
	}
	if fi, err := os.Stat(out + ".key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("default key file: %v %v", fi, err)
	}

	// Neither file is overwritten by a second seal.
	if code, _, stderr := runCLI(t, "program", "seal", plain, "--out", out); code != ExitFailure || !strings.Contains(stderr, "already exists") {
		t.Fatalf("second seal: exit %d %s", code, stderr)
	}

	opened := filepath.Join(dir, "opened.wasm")
	if code, _, stderr := runCLI(t, "program", "open", out, "--key", out+".key", "--out", opened); code != ExitOK {
		t.Fatalf("open: exit %d: %s", code, stderr)
	}
	if b, _ := os.ReadFile(opened); string(b) != string(data) {
		t.Fatal("opened plaintext differs")
	}

	// A truncated ciphertext leaves no output at all.
	cut := filepath.Join(dir, "cut.sealed")
	os.WriteFile(cut, ct[:len(ct)-100], 0o644)
	bad := filepath.Join(dir, "bad.wasm")
	code, _, stderr = runCLI(t, "program", "open", cut, "--key", out+".key", "--out", bad)
	if code != ExitFailure || !strings.Contains(stderr, "truncated") {
		t.Fatalf("truncated: exit %d %s", code, stderr)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatalf("truncated ciphertext left %s behind", bad)
	}
	// A key file others can read is refused.
	os.Chmod(out+".key", 0o644)
	if code, _, stderr := runCLI(t, "program", "open", out, "--key", out+".key", "--out", bad); code != ExitFailure || !strings.Contains(stderr, "chmod 600") {
		t.Fatalf("open key file: exit %d %s", code, stderr)
	}
	if code, _, _ := runCLI(t, "program", "seal", plain); code != ExitUsage {
		t.Fatalf("seal without --out: exit %d", code)
	}
}
