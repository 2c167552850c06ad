package backup

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, dir, rel, data string) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func nodeDir(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "node")
	write(t, dir, "platform.key", "key")
	write(t, dir, "sessions/abc/state", "state")
	write(t, dir, "ledger/data/ledger.db", strings.Repeat("x", 100000))
	write(t, dir, "wazero-cache/compiled", "cache")
	if err := os.MkdirAll(filepath.Join(dir, "blobs/sha256"), 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRoundTrip(t *testing.T) {
	dir := nodeDir(t)
	out := filepath.Join(t.TempDir(), "b.tar")
	m, err := Create(dir, out)
	if err != nil {
		t.Fatal(err)
	}
	if m.Kind != KindNode || len(m.Files) != 3 || len(m.Skipped) != 1 {
		t.Fatalf("manifest %+v", m)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("archive: %v %v", fi, err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dst := filepath.Join(t.TempDir(), "fresh")
	if _, err := Restore(f, dst); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"platform.key", "sessions/abc/state", "ledger/data/ledger.db"} {
		a, _ := os.ReadFile(filepath.Join(dir, rel))
		b, err := os.ReadFile(filepath.Join(dst, rel))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s: %v", rel, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dst, "blobs/sha256")); err != nil {
		t.Fatal("empty directory not restored")
	}
	if _, err := os.Stat(filepath.Join(dst, "wazero-cache")); !os.IsNotExist(err) {
		t.Fatal("the cache was restored")
	}
	// Not onto a directory holding something.
	f.Seek(0, io.SeekStart)
	if _, err := Restore(f, dst); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("restore over a restored directory: %v", err)
	}
}

func TestInUse(t *testing.T) {
	dir := nodeDir(t)
	release, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "b.tar")
	if _, err := Create(dir, out); !errors.Is(err, ErrInUse) {
		t.Fatalf("backup of a locked directory: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("an archive was left behind")
	}
	release()
	if _, err := Create(dir, out); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(t.TempDir(), out); err == nil {
		t.Fatal("backup of a directory that is neither a node's nor a validator's")
	}
}

// A damaged, cut or hostile archive restores nothing.
func TestRestoreRefuses(t *testing.T) {
	dir := nodeDir(t)
	out := filepath.Join(t.TempDir(), "b.tar")
	if _, err := Create(dir, out); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	i := bytes.Index(flipped, []byte("xxxxxxxx"))
	flipped[i] = 'y'
	evil := func(name string, typ byte) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: typ, Mode: 0o600, Linkname: "/etc/passwd"})
		tw.Close()
		return b.Bytes()
	}
	for name, arch := range map[string][]byte{
		"flipped byte":  flipped,
		"cut short":     good[:len(good)/2],
		"no manifest":   good[:bytes.Index(good, []byte(ManifestName))-200],
		"dot-dot":       evil("data/../escape", tar.TypeReg),
		"absolute":      evil("/etc/x", tar.TypeReg),
		"outside data/": evil("other/x", tar.TypeReg),
		"symlink":       evil("data/link", tar.TypeSymlink),
	} {
		parent := t.TempDir()
		dst := filepath.Join(parent, "fresh")
		if _, err := Restore(bytes.NewReader(arch), dst); err == nil {
			t.Errorf("%s: restored", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 0 {
			t.Errorf("%s: left %v behind", name, ents)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); !os.IsNotExist(err) {
		t.Fatal("escaped")
	}
}
