package atomicfile_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/cloisterhq/cloister/internal/atomicfile"
)

// leftovers lists the temporary files left in dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, atomicfile.TempGlob))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestWriteFileReplacesWithExactMode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	old := syscall.Umask(0o077) // the mode asked for wins over the umask
	defer syscall.Umask(old)
	for i, data := range [][]byte{[]byte("first"), []byte("second, longer"), nil} {
		perm := []fs.FileMode{0o644, 0o600, 0o640}[i]
		if err := atomicfile.WriteFile(path, data, perm); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("write %d: read %q, %v; want %q", i, got, err, data)
		}
		st, _ := os.Stat(path)
		if st.Mode().Perm() != perm {
			t.Errorf("write %d: mode %v, want %v", i, st.Mode().Perm(), perm)
		}
	}
	if l := leftovers(t, dir); len(l) != 0 {
		t.Errorf("temporary files left: %v", l)
	}
}

func TestNoReplaceKeepsTheExistingFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	if err := atomicfile.WriteFile(path, []byte("mine"), 0o600, atomicfile.NoReplace()); err != nil {
		t.Fatal(err)
	}
	err := atomicfile.WriteFile(path, []byte("theirs"), 0o600, atomicfile.NoReplace())
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second write: %v, want fs.ErrExist", err)
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Path != path {
		t.Errorf("error %v does not name %s", err, path)
	}
	if got, _ := os.ReadFile(path); string(got) != "mine" {
		t.Errorf("file holds %q after a refused write", got)
	}
	if l := leftovers(t, dir); len(l) != 0 {
		t.Errorf("temporary files left: %v", l)
	}
}

// TestNoReplaceRace: of writers racing for one new name, exactly one wins
// and the file holds its bytes, whole.
func TestNoReplaceRace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "contended")
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = atomicfile.WriteFile(path, bytes.Repeat([]byte{byte('a' + i)}, 4096), 0o600, atomicfile.NoReplace())
		}()
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("writers %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, fs.ErrExist):
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	got, _ := os.ReadFile(path)
	if winner < 0 || !bytes.Equal(got, bytes.Repeat([]byte{byte('a' + winner)}, 4096)) {
		t.Fatalf("winner %d, file holds %d bytes starting %q", winner, len(got), got[:min(len(got), 4)])
	}
	if l := leftovers(t, dir); len(l) != 0 {
		t.Errorf("temporary files left: %v", l)
	}
}

func TestWriteFileFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A directory where the file should be: the rename fails.
	path := filepath.Join(dir, "d")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "inside"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := atomicfile.WriteFile(path, []byte("x"), 0o600)
	var pe *fs.PathError
	if err == nil || !errors.As(err, &pe) || pe.Path != path {
		t.Fatalf("writing over a non-empty directory: %v, want a *fs.PathError naming %s", err, path)
	}
	if l := leftovers(t, dir); len(l) != 0 {
		t.Errorf("temporary files left: %v", l)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("writing into a missing directory: %v, want fs.ErrNotExist", err)
	}
}

func TestNoSyncStillAtomic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := atomicfile.WriteFile(path, []byte("a"), 0o600, atomicfile.NoSync()); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.WriteFile(path, []byte("bb"), 0o600, atomicfile.NoSync()); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "bb" {
		t.Errorf("read %q, want bb", got)
	}
	if l := leftovers(t, dir); len(l) != 0 {
		t.Errorf("temporary files left: %v", l)
	}
}

// TestCreateStreams: a streamed file is invisible until Commit, appears
// whole with its mode, and Abort (before or after Commit) leaves nothing
// but what was committed.
func TestCreateStreams(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "big")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := atomicfile.Create(path, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	var want []byte
	for i := range 64 {
		chunk := bytes.Repeat([]byte{byte('a' + i%26)}, 64<<10)
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
		want = append(want, chunk...)
		if i == 10 {
			if got, _ := os.ReadFile(path); string(got) != "old" {
				t.Fatalf("the destination changed before Commit: %d bytes", len(got))
			}
		}
	}
	if _, err := f.ReadFrom(bytes.NewReader([]byte("tail"))); err != nil {
		t.Fatal(err)
	}
	want = append(want, "tail"...)
	if err := f.Sync(); err != nil { // early, as a caller paying the fsync outside its locks does
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Fatalf("the destination changed at Sync: %d bytes", len(got))
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	f.Abort() // after Commit: nothing happens
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, %v; want %d", len(got), err, len(want))
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", st.Mode().Perm())
	}
	if _, err := f.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("write after Commit: %v", err)
	}
	if err := f.Commit(); err == nil {
		t.Error("second Commit succeeded")
	}
	if err := f.Sync(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Sync after Commit: %v", err)
	}

	// Aborted: the destination keeps its content, no temporary file stays.
	g, err := atomicfile.Create(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	g.Write([]byte("half"))
	g.Abort()
	if got, _ := os.ReadFile(path); !bytes.Equal(got, want) {
		t.Fatal("Abort changed the destination")
	}
	if l := leftovers(t, dir); len(l) != 0 {
		t.Errorf("temporary files left: %v", l)
	}
}

// TestCommitTo: content named only once written (by its hash) is placed
// under that name; with NoReplace an existing name is kept.
func TestCommitTo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sub := filepath.Join(dir, "ab")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := atomicfile.Create(filepath.Join(dir, "upload"), 0o600, atomicfile.NoReplace())
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("content"))
	dst := filepath.Join(sub, "abcdef")
	if err := f.CommitTo(dst); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dst); string(got) != "content" {
		t.Fatalf("read %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "upload")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the name given to Create exists: %v", err)
	}
	g, err := atomicfile.Create(filepath.Join(dir, "upload"), 0o600, atomicfile.NoReplace())
	if err != nil {
		t.Fatal(err)
	}
	g.Write([]byte("other"))
	if err := g.CommitTo(dst); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("CommitTo over an existing file with NoReplace: %v", err)
	}
	if got, _ := os.ReadFile(dst); string(got) != "content" {
		t.Fatalf("read %q after a refused CommitTo", got)
	}
	if l := leftovers(t, dir); len(l) != 0 {
		t.Errorf("temporary files left: %v", l)
	}
	// NoReplace refuses at Create when the name is already taken.
	if _, err := atomicfile.Create(dst, 0o600, atomicfile.NoReplace()); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create with NoReplace over an existing file: %v", err)
	}
}

// CommitOpen hands back the committed file itself: what is written
// through it after the commit is in the file the path names.
func TestCommitOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := atomicfile.Create(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("new\n"))
	f, err := w.CommitOpen()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("more\n"), 4); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "new\nmore\n" {
		t.Fatalf("path holds %q", got)
	}
	if _, err := w.CommitOpen(); err == nil {
		t.Fatal("a second CommitOpen succeeded")
	}
}
