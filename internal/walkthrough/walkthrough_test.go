package walkthrough

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// guides are run in this order, each from a fresh directory. A guide that
// assumes cloister is installed gets it built first, as its first lines
// say, by the prelude.
var guides = []struct {
	path    string
	prelude bool
}{
	{"README.md", false},
	{"docs/local.md", false},
	{"docs/sessions.md", false},
	{"docs/policy.md", true},
	{"docs/ledger.md", false},
	{"docs/operations.md", false},
	{"examples/policies/README.md", true},
	{"docs/keys.md", true},
	{"docs/attestation.md", true},
	{"docs/guest.md", true},
	{"docs/storage.md", true},
	{"docs/testnet.md", false},
	{"examples/README.md", false},
}

const prelude = "go build -o cloister ./cmd/cloister && CGO_ENABLED=0 go build -o cloister-isolate ./cmd/cloister-isolate"

var (
	only      = flag.String("guide", "", "run only the guide with this path (e.g. docs/ledger.md)")
	printOnly = flag.Bool("print", false, "print the script made from each guide, and run nothing")
)

// TestMain: inside the namespaces the test made for a guide (see run),
// the test binary brings up the loopback interface and becomes bash.
func TestMain(m *testing.M) {
	if os.Getenv("WALKTHROUGH_NS") == "1" {
		if err := procMount(); err != nil {
			fmt.Fprintln(os.Stderr, "walkthrough: /proc:", err)
			os.Exit(111)
		}
		if err := loopbackUp(); err != nil {
			fmt.Fprintln(os.Stderr, "walkthrough: loopback:", err)
			os.Exit(111)
		}
		bash, err := exec.LookPath("bash")
		if err == nil {
			err = syscall.Exec(bash, []string{"bash", os.Getenv("WALK_SCRIPT")}, os.Environ())
		}
		fmt.Fprintln(os.Stderr, "walkthrough:", err)
		os.Exit(111)
	}
	os.Exit(m.Run())
}

// procMount gives this PID namespace a /proc of its own, in a mount
// namespace of its own, as a container or `unshare --pid --mount-proc`
// has: with the host's /proc, process numbers inside mean other processes
// there.
func procMount() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return err
	}
	return unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
}

// loopbackUp sets the "lo" interface of this network namespace up.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// TestGuides runs every shell block of each guide, verbatim, in a fresh
// directory, and checks each documented output and exit status. Each guide
// runs in network, PID and mount namespaces of its own, with its own
// /proc: the guides use the default ports (7443, 7480), which nothing else
// on the machine then contends for, and whatever a guide leaves running
// ends with it.
func TestGuides(t *testing.T) {
	if testing.Short() && !*printOnly {
		t.Skip("runs the guides: builds cloister and starts nodes and validators")
	}
	if os.Geteuid() != 0 && !*printOnly {
		t.Skip("each guide runs in network and PID namespaces of its own, which takes root")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	goEnv := map[string]string{}
	for _, v := range []string{"GOCACHE", "GOMODCACHE", "GOROOT"} {
		out, err := exec.Command("go", "env", v).Output()
		if err != nil {
			t.Fatalf("go env %s: %v", v, err)
		}
		goEnv[v] = strings.TrimSpace(string(out))
	}
	for _, g := range guides {
		if *only != "" && *only != g.path {
			continue
		}
		t.Run(strings.ReplaceAll(g.path, "/", "_"), func(t *testing.T) {
			md, err := os.ReadFile(filepath.Join(root, g.path))
			if err != nil {
				t.Fatal(err)
			}
			blocks, err := Parse(g.path, md)
			if err != nil {
				t.Fatal(err)
			}
			if g.prelude {
				blocks = append([]Block{{Doc: "prelude", Line: 1, Commands: []Command{{Doc: "prelude", Line: 1, Text: prelude}}}}, blocks...)
			}
			if *printOnly {
				fmt.Print(Script(blocks))
				return
			}
			run(t, root, goEnv, blocks)
		})
	}
}

// run runs blocks in a fresh directory that holds the repository's files
// (as links) and nothing else, and checks what each command printed.
func run(t *testing.T, root string, goEnv map[string]string, blocks []Block) {
	work, home, outDir := t.TempDir(), t.TempDir(), t.TempDir()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if tracked(root, e.Name()) {
			if err := os.Symlink(filepath.Join(root, e.Name()), filepath.Join(work, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	script := filepath.Join(outDir, "walkthrough.sh")
	if err := os.WriteFile(script, []byte(Script(blocks)), 0o700); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, self)
	cmd.Dir = work
	cmd.Env = []string{
		"WALKTHROUGH_NS=1", "WALK_SCRIPT=" + script, "WALK_OUT=" + outDir,
		"PATH=" + work + ":" + os.Getenv("PATH"),
		"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"GOCACHE=" + goEnv["GOCACHE"], "GOMODCACHE=" + goEnv["GOMODCACHE"], "GOROOT=" + goEnv["GOROOT"],
		// Module-relative paths let the guide's builds reuse the build
		// cache although each guide builds in a directory of its own.
		"GOFLAGS=-trimpath", "GOPROXY=off", "GOTOOLCHAIN=local",
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	start := time.Now()
	runErr := cmd.Run()
	t.Logf("%s in %v", blocks[len(blocks)-1].Doc, time.Since(start).Round(time.Second))

	cmds := Commands(blocks)
	ran := 0
	for i, c := range cmds {
		rc, err := os.ReadFile(filepath.Join(outDir, fmt.Sprintf("%d.rc", i)))
		if err != nil {
			break
		}
		ran++
		out, _ := os.ReadFile(filepath.Join(outDir, fmt.Sprintf("%d.out", i)))
		code, _ := Status(rc)
		where := fmt.Sprintf("%s:%d", c.Doc, c.Line)
		if failed := code != 0; failed != c.ExpectsFailure() {
			t.Errorf("%s: exit status %d, but the guide shows it %s:\n$ %s\n%s", where, code,
				map[bool]string{true: "failing", false: "succeeding"}[c.ExpectsFailure()], c.Text, out)
			continue
		}
		if c.Expect != nil {
			if err := Match(c.Expect, out); err != nil {
				t.Errorf("%s:\n$ %s\n%v", where, c.Text, err)
			}
		}
	}
	if runErr != nil || !strings.Contains(log.String(), "walkthrough: done") {
		var ee *exec.ExitError
		if ctx.Err() != nil {
			t.Errorf("the guide did not finish within 20 minutes (%d of %d commands ran)", ran, len(cmds))
		} else if !errors.As(runErr, &ee) || ee.ExitCode() != 1 {
			t.Errorf("the script failed: %v", runErr)
		}
		t.Errorf("stopped after %d of %d commands:\n%s", ran, len(cmds), log.String())
	}
	if t.Failed() {
		t.Logf("the script: %s (kept while the test runs)", script)
	}
}

// tracked reports whether a top-level entry of the repository belongs in a
// fresh checkout: not .git, not what builds and guides leave behind
// (.gitignore; "git check-ignore" exits 0 for an ignored name).
func tracked(root, name string) bool {
	return name != ".git" && exec.Command("git", "-C", root, "check-ignore", "-q", name).Run() != nil
}
