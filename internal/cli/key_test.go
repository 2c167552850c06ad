package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/keys"
)

func TestKeyNewAndPublic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "alice.key")
	code, _, stderr := runCLI(t, "key", "new", "--out", path)
	if code != ExitOK {
		t.Fatalf("key new: exit %d: %s", code, stderr)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
	k, err := keys.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	pub := k.Public()

	code, stdout, _ := runCLI(t, "key", "public", path, "--json")
	if code != ExitOK {
		t.Fatalf("key public --json: exit %d", code)
	}
	want := `{"signing_key": "` + pub.SigningString() + `", "sealing_key": "` + pub.SealingString() + `"}` + "\n"
	if stdout != want {
		t.Fatalf("key public --json printed\n%s\nwant\n%s", stdout, want)
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(stdout), &m); err != nil || len(m) != 2 {
		t.Fatalf("not a two-field JSON object: %v", err)
	}
	code, stdout, _ = runCLI(t, "key", "public", path)
	if code != ExitOK || stdout != "signing_key: "+pub.SigningString()+"\nsealing_key: "+pub.SealingString()+"\n" {
		t.Fatalf("key public: exit %d\n%s", code, stdout)
	}

	// Never overwrite: exit 1, file unchanged.
	before, _ := os.ReadFile(path)
	code, _, stderr = runCLI(t, "key", "new", "--out", path)
	if code != ExitFailure || !strings.Contains(stderr, "already exists") {
		t.Fatalf("key new over existing: exit %d: %s", code, stderr)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("existing key file changed")
	}
}

func TestKeyErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if code, _, _ := runCLI(t, "key", "new"); code != ExitUsage {
		t.Fatalf("key new without --out: exit %d", code)
	}
	if code, _, _ := runCLI(t, "key", "public", filepath.Join(dir, "missing.key")); code != ExitUsage {
		t.Fatalf("missing file: exit %d", code)
	}
	junk := filepath.Join(dir, "junk.key")
	os.WriteFile(junk, []byte("not a key\n"), 0o600)
	if code, _, stderr := runCLI(t, "key", "public", junk); code != ExitUsage || !strings.Contains(stderr, "not a cloister key file") {
		t.Fatalf("junk file: exit %d %s", code, stderr)
	}
	path := filepath.Join(dir, "open.key")
	if code, _, _ := runCLI(t, "key", "new", "--out", path); code != ExitOK {
		t.Fatal("key new")
	}
	os.Chmod(path, 0o644)
	if code, _, stderr := runCLI(t, "key", "public", path); code != ExitFailure || !strings.Contains(stderr, "chmod 600") {
		t.Fatalf("world-readable key: exit %d %s", code, stderr)
	}
}
