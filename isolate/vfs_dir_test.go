package isolate

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"

	"github.com/cloisterhq/cloister/examples"
)

func newDirTestFS(t *testing.T) *guestFS {
	return newGuestFS(map[string]*inputSource{
		"in":           bytesInput([]byte("input bytes")),
		"data/b.csv":   bytesInput([]byte("b,2\n")),
		"data/a.csv":   bytesInput([]byte("a,1\n")),
		"data-old.csv": bytesInput(nil),
	}, newTestArea(t, 10, 2), 10, 2, func() int64 { return 42 })
}

// TestGuestFSDirectoryInput: inputs named DIR/FILE make a read-only
// directory /input/DIR that lists, stats and reads like one, and nothing
// in it can be created, written, renamed or removed.
func TestGuestFSDirectoryInput(t *testing.T) {
	g := newDirTestFS(t)
	for _, tc := range []struct {
		path string
		want experimentalsys.Errno
		dir  bool
		size int64
	}{
		{"input/data", 0, true, 4096}, {"input/data/", 0, true, 4096}, {"input/data/a.csv", 0, false, 4},
		{"/input/data/../data/b.csv", 0, false, 4}, {"input/data/..", 0, true, 4096}, {"input/data/../in", 0, false, 11},
		{"input/data/missing", experimentalsys.ENOENT, false, 0}, {"input/data/a.csv/x", experimentalsys.ENOTDIR, false, 0},
		{"input/data/a.csv/..", experimentalsys.ENOTDIR, false, 0}, {"input/in/x", experimentalsys.ENOTDIR, false, 0},
		{"input/data/a.csv/../../..", experimentalsys.ENOTDIR, false, 0}, {"input/data-old.csv/a.csv", experimentalsys.ENOTDIR, false, 0},
	} {
		st, errno := g.Stat(tc.path)
		if errno != tc.want || errno == 0 && (st.Mode.IsDir() != tc.dir || st.Size != tc.size || st.Mode.Perm() != map[bool]fs.FileMode{true: 0o555, false: 0o444}[tc.dir]) {
			t.Errorf("Stat(%q) = %v %v size %d, want errno %v dir %v size %d", tc.path, errno, st.Mode, st.Size, tc.want, tc.dir, tc.size)
		}
	}
	if st, _ := g.Stat("input"); st.Nlink != 3 {
		t.Errorf("/input has %d links, want 3 (one subdirectory)", st.Nlink)
	}

	// Listing: /input shows the directory among the files, typed as one;
	// the directory shows its files. Every inode differs.
	list := func(p string) string {
		t.Helper()
		d, errno := g.OpenFile(p, experimentalsys.O_RDONLY|experimentalsys.O_DIRECTORY, 0)
		if errno != 0 {
			t.Fatalf("open %s: %v", p, errno)
		}
		defer d.Close()
		ents, errno := d.Readdir(-1)
		if errno != 0 {
			t.Fatal(errno)
		}
		var b strings.Builder
		for _, e := range ents {
			fmt.Fprintf(&b, "%s:%v ", e.Name, e.Type.IsDir())
		}
		if st, errno := d.Stat(); errno != 0 || !st.Mode.IsDir() {
			t.Errorf("fstat %s: %v %v", p, st.Mode, errno)
		}
		return b.String()
	}
	if got := list("input"); got != "data:true data-old.csv:false in:false " {
		t.Errorf("/input lists %q", got)
	}
	if got := list("input/data"); got != "a.csv:false b.csv:false " {
		t.Errorf("/input/data lists %q", got)
	}
	inos := map[uint64]string{}
	for _, p := range []string{"input/data", "input/data/a.csv", "input/data/b.csv", "input/in", "input/data-old.csv", "input", "output"} {
		st, _ := g.Stat(p)
		if other, dup := inos[st.Ino]; dup {
			t.Errorf("%s and %s share inode %d", p, other, st.Ino)
		}
		inos[st.Ino] = p
	}

	f, errno := g.OpenFile("input/data/b.csv", experimentalsys.O_RDONLY, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	buf := make([]byte, 16)
	if n, _ := f.Read(buf); string(buf[:n]) != "b,2\n" {
		t.Errorf("read %q", buf[:n])
	}
	f.Close()

	// Read-only, all of it.
	w := experimentalsys.O_CREAT | experimentalsys.O_WRONLY
	for name, errno := range map[string]experimentalsys.Errno{
		"create in dir":     second(g.OpenFile("input/data/new", w, 0o644)),
		"write a file":      second(g.OpenFile("input/data/a.csv", experimentalsys.O_WRONLY, 0)),
		"truncate a file":   second(g.OpenFile("input/data/a.csv", experimentalsys.O_RDONLY|experimentalsys.O_TRUNC, 0)),
		"open dir to write": second(g.OpenFile("input/data", experimentalsys.O_RDWR, 0)),
		"mkdir the dir":     g.Mkdir("input/data", 0o755),
		"mkdir in the dir":  g.Mkdir("input/data/sub", 0o755),
		"rmdir the dir":     g.Rmdir("input/data"),
		"unlink the dir":    g.Unlink("input/data"),
		"unlink a file":     g.Unlink("input/data/a.csv"),
		"rename the dir":    g.Rename("input/data", "output/data"),
		"rename a file out": g.Rename("input/data/a.csv", "output/a"),
		"chmod the dir":     g.Chmod("input/data", 0o777),
		"utimens a file":    g.Utimens("input/data/a.csv", 0, 0),
		"link into it":      g.Link("input/in", "input/data/in"),
		"symlink into it":   g.Symlink("/", "input/data/root"),
	} {
		if errno == 0 {
			t.Errorf("%s succeeded", name)
		}
	}
	o, errno := g.OpenFile("output/x", w, 0o644)
	if errno != 0 {
		t.Fatal(errno)
	}
	o.Close()
	if errno := g.Rename("output/x", "input/data/x"); errno != experimentalsys.EROFS {
		t.Errorf("rename an output into the directory: %v, want EROFS", errno)
	}
	if g.handles != 0 {
		t.Errorf("%d handles open after every file and directory was closed", g.handles)
	}
}

func second[T any](_ T, errno experimentalsys.Errno) experimentalsys.Errno { return errno }

// TestDirectoryInputNames: a run refuses input names that would not make
// one plain directory level, or a name that is both a file and a directory.
func TestDirectoryInputNames(t *testing.T) {
	for _, names := range [][]string{{"a/b/c"}, {"a/"}, {"/a"}, {"../a"}, {"a/.."}, {"a/."}, {"a", "a/b"}, {"a/b", "a"}} {
		var ins []Input
		for _, n := range names {
			ins = append(ins, Input{Name: n, Data: []byte("x")})
		}
		_, rep, err := resolve(&Config{Module: []byte{0}, Inputs: ins})
		if err != nil || rep == nil || rep.Outcome != OutcomeInvalid {
			t.Errorf("inputs %q: %v %+v, want an invalid-configuration report", names, err, rep)
		}
	}
	if _, rep, err := resolve(&Config{Module: []byte{0}, Inputs: []Input{{Name: "a/b"}, {Name: "a/c"}, {Name: "b"}}}); err != nil || rep != nil {
		t.Errorf("a directory and a file: %v %+v", err, rep)
	}
}

// TestDirectoryInputGuest: a guest (the sha256sum example) lists
// /input, finds the directory input, lists it and reads each of its files
// through the descriptors the host opened, in a worker and in process.
func TestDirectoryInputGuest(t *testing.T) {
	weights := make([]byte, 300_000)
	for i := range weights {
		weights[i] = byte(i * 7)
	}
	path := filepath.Join(t.TempDir(), "weights")
	if err := os.WriteFile(path, weights, 0o400); err != nil {
		t.Fatal(err)
	}
	cfg := []byte(`{"layers":4}`)
	line := func(b []byte, name string) string { return fmt.Sprintf("%x  %s\n", sha256.Sum256(b), name) }
	want := line([]byte("q"), "a.txt") + line(cfg, "model/config.json") + line(weights, "model/weights.bin") + line(nil, "z")
	for _, inproc := range []bool{false, true} {
		t.Run(fmt.Sprintf("inprocess=%v", inproc), func(t *testing.T) {
			r := newRuntime(t, Options{InProcess: inproc, InProcessNoCancel: inproc})
			res := mustRun(t, r, &Config{Module: examples.SHA256Sum(), Timeout: time.Minute,
				Inputs: []Input{{Name: "model/weights.bin", Path: path}, {Name: "z", Data: nil}, {Name: "model/config.json", Data: cfg}, {Name: "a.txt", Data: []byte("q")}}})
			defer res.Close()
			wantOutcome(t, res, OutcomeExited, 0)
			if string(res.Stdout) != want {
				t.Errorf("the guest printed\n%s\nwant\n%s", res.Stdout, want)
			}
		})
	}
}
