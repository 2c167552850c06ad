package isolate

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if IsWorker() {
		os.Exit(WorkerMain())
	}
	os.Exit(m.Run())
}

func newRuntime(t testing.TB, opts Options) *Runtime {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
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
		t.Fatalf("outcome %s/%d, want %s/%d (error %q, stderr %q)", res.Report.Outcome, res.Report.ExitCode, o, code, res.Report.Error, res.Stderr)
	}
}

func TestSmoke(t *testing.T) {
	for _, inproc := range []bool{true, false} {
		r := newRuntime(t, Options{InProcess: inproc})
		res := mustRun(t, r, &Config{Module: wasmEmpty, Timeout: 10 * time.Second})
		wantOutcome(t, res, OutcomeExited, 0)
		t.Logf("inproc=%v protections=%v missing=%v wall=%d", inproc, res.Report.Protections, res.Report.Missing, res.Report.WallMS)
		res = mustRun(t, r, &Config{Module: wasmUnreachable})
		wantOutcome(t, res, OutcomeTrap, ExitTrap)
		if !strings.Contains(res.Report.Error, "unreachable") {
			t.Errorf("trap error %q does not name unreachable", res.Report.Error)
		}
	}
}
