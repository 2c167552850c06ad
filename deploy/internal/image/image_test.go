package image

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestBuildReproducible builds the image twice from this checkout and
// checks that both archives are byte for byte the same, and what the image
// holds.
func TestBuildReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries twice")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	root := repoRoot(t)
	src, err := DescribeSource(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var digests []string
	var archives [][]byte
	for i := range 2 {
		out := filepath.Join(dir, "image"+string(rune('a'+i))+".tar")
		var res *Result
		if i == 0 {
			var shared string
			shared, res = builtImage(t)
			out = shared
		} else if res, err = Build(ctx, out, Options{Source: src}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, res.Digest)
		archives = append(archives, b)
		if i == 0 {
			head, _ := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
			if got := res.Labels["org.opencontainers.image.revision"]; got != strings.TrimSpace(string(head)) {
				t.Errorf("revision label %q, HEAD %q", got, head)
			}
			if !strings.HasPrefix(res.Labels["dev.cloister.go.version"], "go1.") {
				t.Errorf("go version label %q", res.Labels["dev.cloister.go.version"])
			}
			if res.Labels["org.opencontainers.image.version"] == "" || res.Labels["org.opencontainers.image.created"] != src.Epoch.Format(time.RFC3339) {
				t.Errorf("version/created labels: %v", res.Labels)
			}
		}
	}
	if digests[0] != digests[1] || !bytes.Equal(archives[0], archives[1]) {
		t.Fatalf("two builds differ: %s vs %s (archives equal: %v)", digests[0], digests[1], bytes.Equal(archives[0], archives[1]))
	}
	if !strings.HasPrefix(digests[0], "sha256:") || len(digests[0]) != 71 {
		t.Fatalf("digest %q", digests[0])
	}

	shared, _ := builtImage(t)
	img, err := Open(shared, filepath.Join(dir, "layout"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil || d.String() != digests[0] {
		t.Fatalf("digest read back %v (%v), built %s", d, err, digests[0])
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" || cf.OS != "linux" || cf.Config.Entrypoint[0] != "/usr/local/bin/cloister" {
		t.Errorf("config: user %q os %q entrypoint %v", cf.Config.User, cf.OS, cf.Config.Entrypoint)
	}
	rootfs := filepath.Join(dir, "rootfs")
	if err := Unpack(img, rootfs); err != nil {
		t.Fatal(err)
	}
	for _, b := range binaries {
		p := filepath.Join(rootfs, "usr/local/bin", b)
		f, err := elf.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked", b)
			}
		}
		f.Close()
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v %v", b, fi.Mode(), err)
		}
	}
	passwd, err := os.ReadFile(filepath.Join(rootfs, "etc/passwd"))
	if err != nil || !strings.Contains(string(passwd), "cloister:x:65532:65532:") {
		t.Errorf("/etc/passwd: %q %v", passwd, err)
	}
	if os.Geteuid() == 0 {
		fi, err := os.Stat(filepath.Join(rootfs, "var/lib/cloister"))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != UID || st.Gid != GID || fi.Mode().Perm() != 0o700 {
			t.Errorf("data directory: owner %d:%d mode %v, want %d:%d 0700", st.Uid, st.Gid, fi.Mode(), UID, GID)
		}
	}
	out, err := exec.Command(filepath.Join(rootfs, "usr/local/bin/cloister"), "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "cloister") {
		t.Errorf("cloister --help from the image: %v\n%s", err, out)
	}
}

var (
	buildOnce   sync.Once
	builtPath   string
	builtResult *Result
	builtErr    error
	builtDir    string
)

func repoRoot(t testing.TB) string {
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// builtImage builds the image of this checkout once for the package's
// tests and returns the archive's path.
func builtImage(t testing.TB) (string, *Result) {
	t.Helper()
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		src, err := DescribeSource(ctx, repoRoot(t))
		if err != nil {
			builtErr = err
			return
		}
		if builtDir, builtErr = os.MkdirTemp("", "cloister-image-test-"); builtErr != nil {
			return
		}
		builtPath = filepath.Join(builtDir, "image.tar")
		builtResult, builtErr = Build(ctx, builtPath, Options{Source: src})
	})
	if builtErr != nil {
		t.Fatalf("building the image: %v", builtErr)
	}
	return builtPath, builtResult
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}
