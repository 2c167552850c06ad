package backup

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

// lockHelperEnv makes the test binary the holder of TestLockDiesWithHolder.
const lockHelperEnv = "CLOISTER_BACKUP_LOCK_HOLDER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(lockHelperEnv); dir != "" {
		os.Exit(holdLock(dir))
	}
	os.Exit(m.Run())
}

// holdLock takes dir's lock, starts a child that shares the lock's open
// file (as a child between fork and exec does), prints its pid and dies
// without releasing anything.
func holdLock(dir string) int {
	if _, err := Lock(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var lockFile *os.File
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); target == filepath.Join(dir, LockFile) {
			fd, _ := strconv.Atoi(e.Name())
			lockFile = os.NewFile(uintptr(fd), target)
		}
	}
	if lockFile == nil {
		fmt.Fprintln(os.Stderr, "the lock's descriptor is not in /proc/self/fd")
		return 1
	}
	child := exec.Command("sleep", "120")
	child.ExtraFiles = []*os.File{lockFile}
	if err := child.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(child.Process.Pid)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	return 1
}

// TestLockDiesWithHolder: when the process holding a directory's lock is
// killed, the lock is free for the next one even while a child of the
// holder still has the lock file open (a node's worker caught between
// fork and exec) — a flock would stay held by that child.
func TestLockDiesWithHolder(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep command")
	}
	dir := nodeDir(t)
	holder := exec.Command(os.Args[0], "-test.run=^$")
	holder.Env = append(os.Environ(), lockHelperEnv+"="+dir)
	var stderr bytes.Buffer
	holder.Stderr = &stderr
	out, err := holder.Output()
	if ws, ok := holder.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("the holder did not die by its signal: %v %s", err, stderr.Bytes())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("the holder's child: %q %s", out, stderr.Bytes())
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("the holder's child is gone already: %v", err)
	}
	release, err := Lock(dir)
	if err != nil {
		t.Fatalf("the killed holder's child keeps the lock: %v", err)
	}
	// And within one process, a second Lock is refused.
	if _, err := Lock(dir); !errors.Is(err, ErrInUse) {
		t.Fatalf("a second lock in one process: %v", err)
	}
	release()
	release, err = Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	release()
}
