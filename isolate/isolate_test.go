package isolate

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testDataDir is shared by the package's tests so that each guest is
// compiled once per test run (the compilation cache lives in it).
var testDataDir string

func TestMain(m *testing.M) {
	if IsWorker() {
		os.Exit(WorkerMain())
	}
	dir, err := os.MkdirTemp("", "cloister-isolate-test-")
	if err != nil {
		panic(err)
	}
	testDataDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newRuntime(t testing.TB, opts Options) *Runtime {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = testDataDir
	}
	r, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func mustRun(t testing.TB, r *Runtime, cfg *Config) *Result {
	t.Helper()
	res, err := r.Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

func wantOutcome(t testing.TB, res *Result, o Outcome, code int) {
	t.Helper()
	if res.Report.Outcome != o || res.Report.ExitCode != code {
		t.Fatalf("outcome %s/%d, want %s/%d (error %q, stdout %q, stderr %.2000q)", res.Report.Outcome, res.Report.ExitCode, o, code, res.Report.Error, res.Stdout, res.Stderr)
	}
}

var (
	guestsOnce sync.Once
	guestsDir  string
	guestsErr  error
)

// hostileGuest returns the path of testdata/hostile/NAME built for
// wasip1. All of them are built by one go command, once per test run.
func hostileGuest(t testing.TB, name string) []byte {
	t.Helper()
	guestsOnce.Do(func() {
		guestsDir = filepath.Join(testDataDir, "hostile")
		ents, err := os.ReadDir("testdata/hostile")
		if err != nil {
			guestsErr = err
			return
		}
		args := []string{"build", "-trimpath", "-o", guestsDir + "/"}
		for _, e := range ents {
			args = append(args, "./testdata/hostile/"+e.Name())
		}
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			guestsErr = err
			guestsErr = &buildError{err, string(out)}
		}
	})
	if guestsErr != nil {
		t.Fatalf("building hostile guests: %v", guestsErr)
	}
	b, err := os.ReadFile(filepath.Join(guestsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

func TestEmptyAndTrap(t *testing.T) {
	for _, inproc := range []bool{true, false} {
		r := newRuntime(t, Options{InProcess: inproc})
		res := mustRun(t, r, &Config{Module: wasmEmpty, Timeout: 10 * time.Second})
		wantOutcome(t, res, OutcomeExited, 0)
		if inproc {
			if len(res.Report.Protections) != 0 || res.Report.Missing["worker"] == "" {
				t.Errorf("in-process run reports protections %v, missing %v", res.Report.Protections, res.Report.Missing)
			}
		} else {
			for _, p := range []string{"worker", "seccomp", "no_new_privs", "rlimit"} {
				if !hasString(res.Report.Protections, p) {
					t.Errorf("jailed run lacks protection %q: %v (missing %v)", p, res.Report.Protections, res.Report.Missing)
				}
			}
			// Every mechanism is either in force or explained.
			for _, p := range []string{"worker", "userns", "netns", "mountns", "pidns", "ipcns", "utsns", "emptyroot", "rlimit", "nocaps", "no_new_privs", "seccomp", "cgroup"} {
				_, miss := res.Report.Missing[p]
				if hasString(res.Report.Protections, p) == miss {
					t.Errorf("protection %q: in force=%v, missing=%v", p, !miss, miss)
				}
			}
		}
		res = mustRun(t, r, &Config{Module: wasmUnreachable})
		wantOutcome(t, res, OutcomeTrap, ExitTrap)
		if !strings.Contains(res.Report.Error, "unreachable") {
			t.Errorf("trap error %q does not name unreachable", res.Report.Error)
		}
	}
}

func hasString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
