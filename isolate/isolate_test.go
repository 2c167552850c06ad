package isolate

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"

	"github.com/cloisterhq/cloister/internal/workerbuild"
)

// testDataDir is shared by the package's tests so that each guest is
// compiled once per test run (the compilation cache lives in it).
var testDataDir string

// leanWorker is cmd/cloister-isolate built for the tests: what an installed
// node starts. Runtimes use it unless a test asks for another worker;
// workerKinds lists both kinds for the tests that check the jail itself.
var leanWorker string

var workerKinds = []struct{ name, binary string }{{"lean", ""}, {"self", WorkerBinarySelf}}

func TestMain(m *testing.M) {
	if IsWorker() {
		if mode := os.Getenv(rogueEnv); mode != "" {
			os.Exit(rogueWorker(mode))
		}
		os.Exit(WorkerMain())
	}
	dir, err := os.MkdirTemp("", "cloister-isolate-test-")
	if err != nil {
		panic(err)
	}
	testDataDir = dir
	if leanWorker, err = workerbuild.Build(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workerKinds[0].binary = leanWorker
	code := m.Run()
	os.RemoveAll(dir)
	workerbuild.Cleanup()
	os.Exit(code)
}

func newRuntime(t testing.TB, opts Options) *Runtime {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = testDataDir
	}
	if opts.Engine == "" {
		opts.Engine = testEngine
	}
	if opts.Engine == EngineWasmtime {
		if opts.InProcess {
			if _, linked := lookupEngine(EngineWasmtime); !linked {
				t.Skip("in-process wasmtime runs need a test binary built with -tags cloister_wasmtime")
			}
		} else if opts.WorkerBinary == "" || opts.WorkerBinary == leanWorker {
			// The installed worker of this engine.
			opts.WorkerBinary = wasmtimeWorker(t)
		}
	}
	if opts.WorkerBinary == "" {
		opts.WorkerBinary = leanWorker
	}
	r, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// runBound is how long a test waits for one Run before failing: compiling
// (bounded by CompileTimeout in the worker), the program's own limit, and
// slack for a loaded machine.
func runBound(cfg *Config) time.Duration {
	limit := cfg.Timeout
	if limit <= 0 {
		limit = DefaultTimeout
	}
	return CompileTimeout + limit + 30*time.Second
}

// mustRun runs cfg and fails the test if Run fails or does not return
// within runBound: a run that never ends must not hang the test binary.
func mustRun(t testing.TB, r *Runtime, cfg *Config) *Result {
	t.Helper()
	bound := runBound(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	res, err := r.Run(ctx, cfg)
	if ctx.Err() != nil {
		t.Fatalf("Run did not return within %v (compile bound %v + program timeout + 30s); the worker was killed: %v", bound, CompileTimeout, err)
	}
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

// outputBytes reads an output whole.
func outputBytes(t testing.TB, o Output) []byte {
	t.Helper()
	b, err := o.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantOutcome(t testing.TB, res *Result, o Outcome, code int) {
	t.Helper()
	if res.Report.Outcome != o || res.Report.ExitCode != code {
		t.Fatalf("outcome %s/%d, want %s/%d (error %q, stdout %q, stderr %.2000q)", res.Report.Outcome, res.Report.ExitCode, o, code, res.Report.Error, res.Stdout, res.Stderr)
	}
}

// Bounds for preparing the hostile guest, each failing the test with what
// it was doing rather than leaving it to the test binary's timeout.
const (
	guestBuildBound   = 5 * time.Minute  // go build for wasip1 (the build cache may be cold or locked)
	guestCompileBound = 10 * time.Minute // wazero compiling ~4 MB of Go code, ~10× slower under -race
)

var (
	guestOnce   sync.Once
	guestModule []byte
	guestErr    error
)

// hostileGuest returns testdata/hostile built for wasip1: one module whose
// argv[0] (Config.Name) selects the program. It is built once per test run
// and compiled once into the test's compilation cache, here rather than in
// the first worker that runs it, so that a slow compilation (minutes with
// -race on a loaded machine) is bounded and reported by name instead of
// tripping the worker's CompileTimeout.
func hostileGuest(t testing.TB) []byte {
	t.Helper()
	guestOnce.Do(func() {
		out := filepath.Join(testDataDir, "hostile.wasm")
		ctx, cancel := context.WithTimeout(context.Background(), guestBuildBound)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, "./testdata/hostile")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		start := time.Now()
		if b, err := cmd.CombinedOutput(); err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("go build did not finish within %v", guestBuildBound)
			}
			guestErr = &buildError{err, string(b)}
			return
		}
		t.Logf("built testdata/hostile in %v", time.Since(start).Round(time.Millisecond))
		if guestModule, guestErr = os.ReadFile(out); guestErr != nil {
			return
		}
		start = time.Now()
		if guestErr = precompile(guestModule, guestCompileBound); guestErr == nil {
			t.Logf("compiled testdata/hostile (%d bytes) into the cache in %v", len(guestModule), time.Since(start).Round(time.Millisecond))
		}
	})
	if guestErr != nil {
		t.Fatalf("preparing the hostile guest: %v", guestErr)
	}
	return guestModule
}

// precompile compiles module with the workers' configuration into the
// test's compilation cache, giving up after bound.
func precompile(module []byte, bound time.Duration) error {
	cache, err := wazero.NewCompilationCacheWithDir(filepath.Join(testDataDir, "wazero-cache"))
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		// On every core: the worker compiles on one, but nothing here
		// limits the test process.
		ctx := experimental.WithCompilationWorkers(context.Background(), runtime.GOMAXPROCS(0))
		defer cache.Close(ctx)
		rt, err := (&executor{cache: cache}).newRuntime(ctx, false)
		if err != nil {
			done <- err
			return
		}
		defer rt.Close(ctx)
		_, err = rt.CompileModule(ctx, module)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(bound):
		return fmt.Errorf("compiling did not finish within %v", bound)
	}
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

func TestEmptyAndTrap(t *testing.T) {
	for _, k := range workerKinds {
		t.Run(k.name, func(t *testing.T) { testEmptyAndTrap(t, k.binary) })
	}
}

func testEmptyAndTrap(t *testing.T, worker string) {
	for _, inproc := range []bool{true, false} {
		r := newRuntime(t, Options{InProcess: inproc, WorkerBinary: worker})
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

// TestForeignProc starts this test binary in a PID namespace of its own
// without a proc file system for it (as `unshare -p` without --mount-proc
// does) and runs a job with workers that are the binary re-executed: the
// child's user-namespace id maps would go to another process's /proc
// entry, so the jail must start workers without a user namespace and say
// why, rather than fail every run (as `go run ./cmd/cloister` did there).
func TestForeignProc(t *testing.T) {
	if os.Getenv("CLOISTER_TEST_FOREIGN_PROC") == "1" {
		r := newRuntime(t, Options{WorkerBinary: WorkerBinarySelf})
		res := mustRun(t, r, &Config{Module: wasmEmpty, Timeout: 10 * time.Second})
		wantOutcome(t, res, OutcomeExited, 0)
		fmt.Printf("userns: %s\n", res.Report.Missing["userns"])
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("a PID namespace of its own takes root")
	}
	if selfNoCgo() {
		t.Skip("this test binary has no cgo: a root node's workers need no user namespace anyway")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestForeignProc$", "-test.v")
	cmd.Env = append(os.Environ(), "CLOISTER_TEST_FOREIGN_PROC=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the run in a PID namespace without its own /proc failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "userns: not created: /proc belongs to another PID namespace") {
		t.Fatalf("the report does not say why there is no user namespace:\n%s", out)
	}
}
