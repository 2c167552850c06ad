package cli

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/isolate"
)

// warmDemoCache compiles the demo's program into cacheDir the way the
// demo's runtime will look it up. The first compile of the 3.3 MiB psi-sum
// module takes about 2 s on a quiet machine but one to several minutes
// with the race detector on a loaded two-core one (the compiler runs
// instrumented), which would eat the policy's run limit; compiled here,
// outside any session, it is bounded only by ctx.
func warmDemoCache(ctx context.Context, t *testing.T, cacheDir string) {
	t.Helper()
	ex, err := examples.Lookup("psi-sum")
	if err != nil {
		t.Fatal(err)
	}
	rt, err := isolate.New(ctx, isolate.Options{DataDir: cacheDir, WarmWorkers: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	cfg := &isolate.Config{Module: ex.Wasm, Name: "psi-sum.wasm", Memory: 256 << 20, MaxOutput: 1 << 20, Deterministic: true, Timeout: time.Until(deadlineOf(ctx))}
	for _, f := range ex.Inputs {
		cfg.Inputs = append(cfg.Inputs, isolate.Input{Name: f.Name, Data: f.Data})
	}
	start := time.Now()
	res, err := rt.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("compiling psi-sum: %v", err)
	}
	if res.Report.Outcome != isolate.OutcomeExited || res.Report.ExitCode != 0 {
		t.Fatalf("psi-sum warm-up run: %s, exit %d: %s", res.Report.Outcome, res.Report.ExitCode, res.Report.Error)
	}
	t.Logf("psi-sum compiled and run once in %s", time.Since(start).Round(time.Millisecond))
}

// syncBuilder is a strings.Builder safe for the demo's writers.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func deadlineOf(ctx context.Context) time.Time {
	dl, ok := ctx.Deadline()
	if !ok {
		return time.Now().Add(time.Hour)
	}
	return dl
}

// TestDemo runs the demo as 'cloister demo' does (jailed workers; this
// test binary serves as the worker, see TestMain) and checks the steps and
// the answer. The compilation cache is filled first, so the demo's own
// limits (2 min run, 3 min wait) measure the protocol and the run, not the
// compiler under the race detector; the whole test is bounded by its
// context.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cache := t.TempDir()
	warmDemoCache(ctx, t, cache)
	var out, errOut syncBuilder
	start := time.Now()
	// With its console: once the flow is done, the node stays up for the
	// console's checks (console_test.go), then the demo stops.
	dctx, stop := context.WithCancel(ctx)
	defer stop()
	served := false
	con := &demoConsole{addr: "127.0.0.1:0", ready: func(info demoConsoleInfo) {
		served = true
		defer stop()
		checkConsole(ctx, t, info)
	}}
	if err := runDemoWith(dctx, &out, &errOut, cache, false, con); err != nil {
		t.Fatalf("demo: %v\n%s%s", err, out.String(), errOut.String())
	}
	if !served {
		t.Fatalf("demo --console did not serve its console:\n%s", out.String())
	}
	t.Logf("demo took %s:\n%s", time.Since(start).Round(time.Millisecond), out.String())
	for _, want := range []string{"create: session", "attest: 4 parties verified", "provision: carol", "run: exited, exit 0",
		`{"intersection_size":4,"sum":13050}`, "correct:", "node.registered at #0", "ledger: result.committed #5 is included in the checkpoint",
		"cosigned by validators with 1 of 1 votes", "signed by the session key dave attested", "close: dave erased the session", "total "} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	jailed := false
	for _, line := range strings.Split(out.String(), "\n") {
		jailed = jailed || strings.Contains(line, "isolation: [") && strings.Contains(line, "worker")
	}
	if !jailed {
		t.Fatalf("demo did not report a jailed worker:\n%s", out.String())
	}
}
