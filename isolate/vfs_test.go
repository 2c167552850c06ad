package isolate

import (
	"bytes"
	"io/fs"
	"testing"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
)

// newTestArea makes an output area (a memfd) for the limits, released
// when the test ends.
func newTestArea(t testing.TB, maxBytes int64, maxFiles int) *outputArea {
	t.Helper()
	block, blocks, err := areaLayout(maxBytes, maxFiles)
	if err != nil {
		t.Fatal(err)
	}
	f, err := createAreaFile("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return newOutputArea(fileStore{f}, block, blocks)
}

// bytesInput is an input source over bytes in memory.
func bytesInput(b []byte) *inputSource {
	return &inputSource{at: bytes.NewReader(b), size: int64(len(b))}
}

func newTestFS(t testing.TB, maxBytes int64, maxFiles int) *guestFS {
	return newGuestFS(map[string]*inputSource{"in": bytesInput([]byte("input bytes"))}, newTestArea(t, maxBytes, maxFiles), maxBytes, maxFiles, func() int64 { return 42 })
}

func TestGuestFSResolve(t *testing.T) {
	g := newTestFS(t, 10, 2)
	for _, tc := range []struct {
		path string
		want experimentalsys.Errno
	}{
		{"", 0}, {".", 0}, {"input", 0}, {"output", 0}, {"input/in", 0}, {"input/../input/in", 0},
		{"../../input/in", 0}, {"input/in/..", experimentalsys.ENOTDIR}, {"input/in/x", experimentalsys.ENOTDIR},
		{"input/missing", experimentalsys.ENOENT}, {"etc/passwd", experimentalsys.ENOENT},
		{"etc/../input/in", 0}, {"proc/self/environ", experimentalsys.ENOENT},
	} {
		if _, errno := g.Stat(tc.path); errno != tc.want {
			t.Errorf("Stat(%q) = %v, want %v", tc.path, errno, tc.want)
		}
	}
}

func TestGuestFSLimits(t *testing.T) {
	g := newTestFS(t, 10, 2)
	f, errno := g.OpenFile("output/a", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0o644)
	if errno != 0 {
		t.Fatal(errno)
	}
	if n, errno := f.Write([]byte("123456")); n != 6 || errno != 0 {
		t.Fatalf("write: %d %v", n, errno)
	}
	// 4 bytes of budget left: a 6-byte write is cut to 4, the next fails.
	if n, errno := f.Write([]byte("abcdef")); n != 4 || errno != 0 {
		t.Fatalf("partial write: %d %v", n, errno)
	}
	if n, errno := f.Write([]byte("x")); n != 0 || errno != errOutputLimit || g.takeRefusal() != refusedBytes {
		t.Fatalf("write past the limit: %d %v", n, errno)
	}
	// Overwriting in place costs nothing.
	if n, errno := f.Pwrite([]byte("zz"), 0); n != 2 || errno != 0 || g.takeRefusal() != refusedNone {
		t.Fatalf("pwrite in place: %d %v", n, errno)
	}
	// A sparse write far beyond the end is refused outright.
	if _, errno := f.Pwrite([]byte("y"), 1000); errno != errOutputLimit || g.takeRefusal() != refusedBytes {
		t.Fatalf("sparse write: %v", errno)
	}
	if errno := f.Truncate(100); errno != errOutputLimit || g.takeRefusal() != refusedBytes {
		t.Fatalf("truncate up: %v", errno)
	}
	if _, errno := g.OpenFile("output/b", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0o644); errno != 0 {
		t.Fatal(errno)
	}
	if _, errno := g.OpenFile("output/c", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0o644); errno != errOutputLimit || g.takeRefusal() != refusedFiles {
		t.Fatalf("third file: %v", errno)
	}
	// Removing a file that is still open keeps its bytes and its slot
	// (as on a disk); closing it returns them.
	if errno := g.Unlink("output/a"); errno != 0 {
		t.Fatal(errno)
	}
	if _, errno := g.OpenFile("output/c", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0o644); errno != errOutputLimit || g.takeRefusal() != refusedFiles {
		t.Fatalf("create while the unlinked file is open: %v", errno)
	}
	if n, errno := f.Write([]byte("x")); n != 0 || errno != errOutputLimit || g.takeRefusal() != refusedBytes {
		t.Fatalf("write to the unlinked file past the limit: %d %v", n, errno)
	}
	if g.used != 10 {
		t.Fatalf("used %d while the unlinked file is open, want 10", g.used)
	}
	f.Close()
	if _, errno := g.OpenFile("output/c", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0o644); errno != 0 {
		t.Fatalf("after unlink and close: %v", errno)
	}
	outs, hit, err := g.collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 2 || outs[0].name != "b" || outs[1].name != "c" || len(hit) != 2 || g.used != 0 {
		t.Fatalf("collect: %v limits hit %q, used=%d", outs, hit, g.used)
	}
}

func TestGuestFSReadOnlyInput(t *testing.T) {
	g := newTestFS(t, 10, 2)
	for _, flag := range []experimentalsys.Oflag{experimentalsys.O_WRONLY, experimentalsys.O_RDWR, experimentalsys.O_TRUNC, experimentalsys.O_APPEND, experimentalsys.O_CREAT} {
		if _, errno := g.OpenFile("input/in", flag, 0); errno != experimentalsys.EROFS {
			t.Errorf("open input with %v: %v, want EROFS", flag, errno)
		}
	}
	if _, errno := g.OpenFile("input/new", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0); errno != experimentalsys.EROFS {
		t.Errorf("create in input: %v", errno)
	}
	if _, errno := g.OpenFile("newfile", experimentalsys.O_CREAT|experimentalsys.O_WRONLY, 0); errno != experimentalsys.EROFS {
		t.Errorf("create in root: %v", errno)
	}
	f, errno := g.OpenFile("input/in", experimentalsys.O_RDONLY, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	if _, errno := f.Write([]byte("x")); errno != experimentalsys.EBADF {
		t.Errorf("write on a read-only descriptor: %v", errno)
	}
	buf := make([]byte, 5)
	if n, _ := f.Pread(buf, 6); string(buf[:n]) != "bytes" {
		t.Errorf("pread: %q", buf[:n])
	}
	for name, errno := range map[string]experimentalsys.Errno{
		"unlink": g.Unlink("input/in"), "rename": g.Rename("input/in", "output/x"),
		"mkdir": g.Mkdir("input/d", fs.ModeDir), "symlink": g.Symlink("/etc/passwd", "output/l"),
		"link": g.Link("input/in", "output/l"), "rmdir": g.Rmdir("input"),
	} {
		if errno == 0 {
			t.Errorf("%s on input succeeded", name)
		}
	}
}

// TestGuestFSHandleLimit: at most maxOpenHandles handles are open at once;
// one more is refused (EMFILE to the guest) and closing one makes room.
func TestGuestFSHandleLimit(t *testing.T) {
	g := newTestFS(t, 10, 2)
	var open []experimentalsys.File
	for i := 0; i < maxOpenHandles; i++ {
		f, errno := g.OpenFile("input/in", experimentalsys.O_RDONLY, 0)
		if errno != 0 {
			t.Fatalf("handle %d: %v", i, errno)
		}
		open = append(open, f)
	}
	if _, errno := g.OpenFile("output", experimentalsys.O_RDONLY, 0); errno != errOutputLimit || g.takeRefusal() != refusedHandles {
		t.Fatalf("handle %d: %v, want EMFILE", maxOpenHandles+1, errno)
	}
	if refusedHandles.errno() != wasiErrnoMfile || g.bytesHit || g.filesHit {
		t.Errorf("the handle limit is reported as an output limit")
	}
	open[0].Close()
	open[0].Close() // a second close changes nothing
	if _, errno := g.OpenFile("output", experimentalsys.O_RDONLY, 0); errno != 0 {
		t.Fatalf("after a close: %v", errno)
	}
	if g.handles != maxOpenHandles {
		t.Errorf("%d handles counted, want %d", g.handles, maxOpenHandles)
	}
}
