package isolate

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// poolState returns the hashes the pool's workers were preloaded with
// (zero for a blank worker).
func poolState(r *Runtime) [][32]byte {
	r.jail.mu.Lock()
	defer r.jail.mu.Unlock()
	var out [][32]byte
	for _, w := range r.jail.pool {
		var s [32]byte
		if w.preload != nil {
			s = w.preload.sum
		}
		out = append(out, s)
	}
	return out
}

// waitPool waits until the pool holds n workers, n of which satisfy ok.
func waitPool(t *testing.T, r *Runtime, n int, ok func([][32]byte) bool) [][32]byte {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := poolState(r)
		if len(st) == n && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool %x did not reach the expected state within 20s", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func count(st [][32]byte, sum [32]byte) int {
	n := 0
	for _, s := range st {
		if s == sum {
			n++
		}
	}
	return n
}

// TestPoolPreload: a warm worker is preloaded with the module the last job
// ran, while another stays blank; jobs run their own module whatever the
// pool holds, and a worker preloaded with another module is never used.
func TestPoolPreload(t *testing.T) {
	r := newRuntime(t, Options{WarmWorkers: 2})
	a, b := wasmExit(11), wasmExit(22)
	var blank [32]byte
	sumA, sumB := mustResolve(t, a).ModuleSHA256, mustResolve(t, b).ModuleSHA256
	waitPool(t, r, 2, func(st [][32]byte) bool { return count(st, blank) == 2 })

	wantOutcome(t, mustRun(t, r, &Config{Module: a}), OutcomeExited, 11)
	waitPool(t, r, 2, func(st [][32]byte) bool { return count(st, sumA) == 1 && count(st, blank) == 1 })
	// A again: the preloaded worker runs it, and is replaced by another.
	wantOutcome(t, mustRun(t, r, &Config{Module: a}), OutcomeExited, 11)
	waitPool(t, r, 2, func(st [][32]byte) bool { return count(st, sumA) >= 1 })
	// B: never the worker holding A.
	wantOutcome(t, mustRun(t, r, &Config{Module: b}), OutcomeExited, 22)
	wantOutcome(t, mustRun(t, r, &Config{Module: b}), OutcomeExited, 22)
	waitPool(t, r, 2, func(st [][32]byte) bool { return count(st, sumB) >= 1 })
	for i := 0; i < 3; i++ {
		wantOutcome(t, mustRun(t, r, &Config{Module: a}), OutcomeExited, 11)
		wantOutcome(t, mustRun(t, r, &Config{Module: b}), OutcomeExited, 22)
	}

	// One worker: it preloads once a module repeats; another module then
	// discards it and runs cold.
	r1 := newRuntime(t, Options{WarmWorkers: 1})
	waitPool(t, r1, 1, func(st [][32]byte) bool { return st[0] == blank })
	wantOutcome(t, mustRun(t, r1, &Config{Module: a}), OutcomeExited, 11)
	waitPool(t, r1, 1, func(st [][32]byte) bool { return st[0] == blank })
	wantOutcome(t, mustRun(t, r1, &Config{Module: a}), OutcomeExited, 11)
	waitPool(t, r1, 1, func(st [][32]byte) bool { return st[0] == sumA })
	wantOutcome(t, mustRun(t, r1, &Config{Module: b}), OutcomeExited, 22)
	waitPool(t, r1, 1, func(st [][32]byte) bool { return st[0] == blank })
}

func mustResolve(t testing.TB, module []byte) *job {
	t.Helper()
	return openedJob(t, &Config{Module: module})
}

// openedJob resolves cfg and opens its descriptors (the output area and
// the inputs), as Run does; they are closed when the test ends.
func openedJob(t testing.TB, cfg *Config) *job {
	t.Helper()
	j, rep, err := resolve(cfg)
	if err != nil || rep != nil {
		t.Fatal(err, rep)
	}
	files, rep, err := openJobFiles(j, cfg, "")
	if err != nil || rep != nil {
		t.Fatal(err, rep)
	}
	t.Cleanup(files.close)
	return j
}

// TestPreloadedExecutor: a preloaded module runs without its bytes in the
// job; a job for another module drops the preload and compiles its own; a
// job without bytes for a module not preloaded is refused.
func TestPreloadedExecutor(t *testing.T) {
	ctx := context.Background()
	prepare := func() *executor {
		e := &executor{}
		rt, err := e.newRuntime(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		e.prepared = rt
		e.preload(ctx, wasmExit(5), false)
		if e.preloaded == nil || e.preloaded.code == nil {
			t.Fatal("nothing preloaded")
		}
		return e
	}
	jb := mustResolve(t, wasmExit(5))
	jb.Module = nil
	res, err := prepare().execute(ctx, jb, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantOutcome(t, res, OutcomeExited, 5)

	res, err = prepare().execute(ctx, mustResolve(t, wasmExit(6)), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantOutcome(t, res, OutcomeExited, 6)

	jb = mustResolve(t, wasmExit(7))
	jb.Module = nil
	if _, err := prepare().execute(ctx, jb, nil, nil); !errors.Is(err, errNotPreloaded) {
		t.Errorf("job without bytes for a module not preloaded: %v, want errNotPreloaded", err)
	}
}

// TestPreloadedWorkerRefusesOtherModule: a worker that preloaded one module
// (and locked down early: no cache, no privilege) refuses a job for
// another, rather than misreporting it as invalid. The pool never sends one.
func TestPreloadedWorkerRefusesOtherModule(t *testing.T) {
	r := newRuntime(t, Options{})
	a, b := mustResolve(t, wasmExit(1)), mustResolve(t, wasmExit(2))
	w, err := r.jail.spawn(&moduleHint{sum: a.ModuleSHA256, module: a.Module})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), runBound(&Config{}))
	defer cancel()
	res, err := r.jail.runOn(ctx, w, b, nil)
	if err == nil || !strings.Contains(err.Error(), "another module than the one preloaded") {
		t.Fatalf("job for another module: %v, %+v; want the worker to refuse it", err, res)
	}
}
