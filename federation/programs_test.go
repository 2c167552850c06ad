package federation

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A program is read and checked against its SHA-256 once, then served
// from memory: a file changed afterwards changes nothing, a file changed
// before its first read is refused, and the cache stays within its bounds.
func TestProgramCache(t *testing.T) {
	dir := t.TempDir()
	put := func(b []byte) string {
		sum := digest(b)
		if err := os.WriteFile(filepath.Join(dir, sum+".wasm"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return sum
	}
	pc := programCache{dir: dir}
	a := put([]byte("program a"))
	if got, err := pc.get(a); err != nil || string(got) != "program a" {
		t.Fatalf("get: %q %v", got, err)
	}
	os.WriteFile(filepath.Join(dir, a+".wasm"), []byte("tampered"), 0o600)
	if got, err := pc.get(a); err != nil || string(got) != "program a" {
		t.Fatalf("get after the file changed: %q %v", got, err)
	}
	b := put([]byte("program b"))
	os.WriteFile(filepath.Join(dir, b+".wasm"), []byte("tampered"), 0o600)
	if _, err := pc.get(b); !errors.Is(err, errProgramChanged) {
		t.Fatalf("a changed file: %v", err)
	}
	if _, err := pc.get(digest([]byte("absent"))); !errors.Is(err, errNoProgram) {
		t.Fatalf("an absent program: %v", err)
	}
	for i := range maxCachedPrograms + 3 {
		if _, err := pc.get(put([]byte{byte(i), 'p'})); err != nil {
			t.Fatal(err)
		}
	}
	if len(pc.progs) != maxCachedPrograms {
		t.Fatalf("%d programs cached, at most %d", len(pc.progs), maxCachedPrograms)
	}
	if _, ok := pc.progs[a]; ok {
		t.Fatal("the least recently used program was kept")
	}
}
