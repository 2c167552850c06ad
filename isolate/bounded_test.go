package isolate

import (
	"context"
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
	defer func(d time.Duration) { workerExitWait = d }(workerExitWait)
	workerExitWait = 300 * time.Millisecond
	j := &jailer{nsMiss: map[string]string{}}
	w := stuckWorker(t)
	jb, rep, err := resolve(&Config{Module: append(wasmEmpty, make([]byte, 1<<20)...)})
	if err != nil || rep != nil {
		t.Fatal(err, rep)
	}
	var runErr error
	returnsWithin(t, 10*time.Second, "runOn with a worker that cannot be reaped", func() {
		_, runErr = j.runOn(context.Background(), w, jb)
	})
	if runErr == nil || !strings.Contains(runErr.Error(), "did not exit") {
		t.Errorf("error %v, want one saying the worker did not exit", runErr)
	}
}
