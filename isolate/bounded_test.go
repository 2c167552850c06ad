package isolate

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// stuckWorker is a worker whose process can never be reaped (as one stuck
// in the kernel would be): killing it does nothing and done never closes.
// Its result pipe is at end of file and nobody reads its job pipe.
func stuckWorker(t *testing.T) *worker {
	t.Helper()
	jobR, jobW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	resR, resW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	resW.Close()
	t.Cleanup(func() { jobR.Close() })
	w := &worker{cmd: exec.Command("/nonexistent/stuck-worker"), jobW: jobW, resR: resR,
		stderr: &limitedBuffer{max: 1 << 10}, done: make(chan struct{}), ready: make(chan struct{}),
		missing: map[string]string{}, started: time.Now()}
	close(w.ready)
	return w
}

// returnsWithin fails the test if f does not return within d.
func returnsWithin(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v: a wait is unbounded", what, d)
	}
}

// TestStuckWorkerDoesNotHangRun: a worker that gives no result and cannot
// be reaped makes Run fail, within a bound, with an error that says so.
func TestStuckWorkerDoesNotHangRun(t *testing.T) {
	j := &jailer{nsMiss: map[string]string{}, exitWait: 300 * time.Millisecond, writeTimeout: 300 * time.Millisecond}
	w := stuckWorker(t)
	jb := openedJob(t, &Config{Module: append(wasmEmpty, make([]byte, 1<<20)...)})
	var runErr error
	returnsWithin(t, 10*time.Second, "runOn with a worker that cannot be reaped", func() {
		_, runErr = j.runOn(context.Background(), w, jb, nil)
	})
	if runErr == nil || !strings.Contains(runErr.Error(), "did not exit") {
		t.Errorf("error %v, want one saying the worker did not exit", runErr)
	}
}

// TestCloseIsPrompt: Close kills idle pooled workers and any run in flight,
// which returns ErrClosed at once instead of running to its own limit; later
// runs are refused; no worker process is left.
func TestCloseIsPrompt(t *testing.T) {
	before := len(workerChildren(t))
	r, err := New(context.Background(), Options{DataDir: testDataDir, WarmWorkers: 2})
	if err != nil {
		t.Fatal(err)
	}
	mustRun(t, r, &Config{Module: wasmEmpty})
	runErr := make(chan error, 1)
	go func() {
		_, err := r.Run(context.Background(), &Config{Module: wasmLoop, Timeout: time.Hour})
		runErr <- err
	}()
	time.Sleep(300 * time.Millisecond) // the loop is starting or running
	// The run's limit is an hour: a Close that waited for it would not
	// return within the guard, however loaded the machine.
	var closeErr error
	returnsWithin(t, time.Minute, "Close", func() { closeErr = r.Close() })
	if closeErr != nil {
		t.Errorf("Close: %v", closeErr)
	}
	select {
	case err := <-runErr:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("the run in flight ended with %v, want ErrClosed", err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("the run in flight (limit an hour) did not end within a minute of Close")
	}
	if _, err := r.Run(context.Background(), &Config{Module: wasmEmpty}); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
	if after := len(workerChildren(t)); after > before {
		t.Errorf("%d worker processes left after Close", after-before)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestCloseWithStuckWorker: a pooled worker that cannot be reaped does not
// hang Close, which says what it left behind.
func TestCloseWithStuckWorker(t *testing.T) {
	j, err := newJailer(context.Background(), nil, 0, &workerBinary{path: "/proc/self/exe"}, EngineWazero)
	if err != nil {
		t.Fatal(err)
	}
	j.exitWait = 300 * time.Millisecond
	j.cg = nil // nothing real to remove
	w := stuckWorker(t)
	j.track(w)
	j.pool = append(j.pool, w)
	var closeErr error
	returnsWithin(t, 10*time.Second, "Close with a worker that cannot be reaped", func() { closeErr = j.close() })
	if closeErr == nil || !strings.Contains(closeErr.Error(), "not reaped") {
		t.Errorf("Close error %v, want one saying a worker was not reaped", closeErr)
	}
}

// TestCloseWhileStarting: Close right after New, while the pool's workers
// are being started, waits for those starts, kills the workers and leaves
// none behind.
func TestCloseWhileStarting(t *testing.T) {
	before := len(workerChildren(t))
	for i := 0; i < 3; i++ {
		r, err := New(context.Background(), Options{DataDir: testDataDir, WarmWorkers: 3})
		if err != nil {
			t.Fatal(err)
		}
		var closeErr error
		returnsWithin(t, 10*time.Second, "Close while workers start", func() { closeErr = r.Close() })
		if closeErr != nil {
			t.Errorf("Close: %v", closeErr)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(workerChildren(t)) > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if after := len(workerChildren(t)); after > before {
		t.Errorf("%d worker processes left after Close", after-before)
	}
}
