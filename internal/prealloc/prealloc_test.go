package prealloc

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A pool makes its files in the background once started, of zeros and
// the size asked; each is handed out once; a write within the size is
// synced in place and one past it grows the file; closing removes the
// files not handed out, and RemoveZeros those a crash left.
func TestPool(t *testing.T) {
	dir := t.TempDir()
	var n atomic.Int64
	p := NewPool(dir, 3, 4096, func() (string, error) { return fmt.Sprintf("f%d.spare", n.Add(1)), nil })
	if _, ok := p.Take(); ok {
		t.Fatal("a file handed out before Start")
	}
	p.Start()
	waitReady(t, p, 3)
	seen := map[string]bool{}
	for range 2 {
		f, ok := p.Take()
		if !ok || seen[f.Name] {
			t.Fatalf("take: %q %v", f.Name, ok)
		}
		seen[f.Name] = true
		if fi, err := os.Stat(filepath.Join(dir, f.Name)); err != nil || fi.Size() != 4096 {
			t.Fatalf("%s: %v", f.Name, err)
		}
	}
	var small, big File
	for name := range seen {
		if small.Name == "" {
			small.Name = name
		} else {
			big.Name = name
		}
	}
	for _, f := range []*File{&small, &big} {
		var err error
		if f.F, err = os.OpenFile(filepath.Join(dir, f.Name), os.O_WRONLY, 0); err != nil {
			t.Fatal(err)
		}
		defer f.F.Close()
	}
	if err := WriteAt(small.F, []byte("record"), 0, 4096); err != nil {
		t.Fatal(err)
	}
	if err := WriteAt(big.F, []byte(strings.Repeat("x", 5000)), 0, 4096); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, big.Name)); fi.Size() != 5000 {
		t.Fatalf("a write past the size: file of %d bytes", fi.Size())
	}
	p.Abandon() // as a crash: the ready file stays
	RemoveZeros(dir, func(name string) bool { return strings.HasSuffix(name, ".spare") }, 4096)
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("%d files after RemoveZeros, want the two written", len(ents))
	}
	q := NewPool(dir, 2, 512, func() (string, error) { return fmt.Sprintf("g%d.spare", n.Add(1)), nil })
	made, err := q.Make(2)
	if err != nil || len(made) != 2 {
		t.Fatal(err)
	}
	for _, f := range made {
		f.F.Close()
	}
	q.Start()
	waitReady(t, q, 2)
	q.Close()
	if ents, _ := os.ReadDir(dir); len(ents) != 4 {
		t.Fatalf("%d files after Close, want the two written and the two made by Make", len(ents))
	}
}

// waitReady waits until p has n files ready and makes no more.
func waitReady(t *testing.T, p *Pool, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if ready, filling := p.Ready(); ready == n && !filling {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("files not made within 10 s")
		}
	}
}
