package isolate

import (
	"runtime"
	"testing"
	"time"
)

// wasmCount counts memory word 0 up to n and returns: CPU-bound work that
// ends by itself.
func wasmCount(n int64) []byte {
	code := []byte{0x03, 0x40, // loop
		0x41, 0x00, 0x41, 0x00, 0x28, 0x02, 0x00, // i32.const 0; i32.const 0; i32.load
		0x41, 0x01, 0x6a, 0x36, 0x02, 0x00, // i32.const 1; i32.add; i32.store
		0x41, 0x00, 0x28, 0x02, 0x00, 0x41} // i32.const 0; i32.load; i32.const n
	code = append(code, sleb(n)...)
	code = append(code, 0x49, 0x0d, 0x00, 0x0b) // i32.lt_u; br_if 0; end
	return wasmModule(nil, 1, code)
}

// TestRunReportsCPUTime: a CPU-bound guest's report carries the CPU time
// the host read for its worker — more than nothing, and no more than the
// wall time on every core (plus one tick of /proc's 10 ms resolution) —
// also when the run is killed at its deadline; a run without a worker
// process says it was not measured.
func TestRunReportsCPUTime(t *testing.T) {
	r := newRuntime(t, Options{})
	check := func(what string, res *Result) {
		t.Helper()
		cpu, wall := res.Report.CPUMS, res.Report.WallMS
		if cpu == nil {
			t.Fatalf("%s: no cpu_ms in the report", what)
		}
		if *cpu <= 0 || *cpu > wall*int64(runtime.NumCPU())+10 {
			t.Errorf("%s: cpu %d ms for a wall time of %d ms on %d cores", what, *cpu, wall, runtime.NumCPU())
		}
		t.Logf("%s: cpu %d ms, wall %d ms", what, *cpu, wall)
	}
	res := mustRun(t, r, &Config{Module: wasmCount(100_000_000), Timeout: time.Minute})
	wantOutcome(t, res, OutcomeExited, 0)
	check("counting", res)
	res = mustRun(t, r, &Config{Module: wasmLoop, Timeout: 500 * time.Millisecond})
	wantOutcome(t, res, OutcomeTimeout, ExitTimeout)
	check("killed at its deadline", res)

	ri := newRuntime(t, Options{InProcess: true})
	res = mustRun(t, ri, &Config{Module: wasmCount(1000), Timeout: time.Minute})
	wantOutcome(t, res, OutcomeExited, 0)
	if res.Report.CPUMS != nil {
		t.Errorf("in process: cpu_ms %d, want it left out (not measured)", *res.Report.CPUMS)
	}
}
