package isolate

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/workerbuild"
)

// testEngine is the engine newRuntime gives runtimes that do not name
// one: wazero, or wasmtime while TestEngineWasmtime replays the suites.
var testEngine = EngineWazero

var (
	wasmtimeOnce sync.Once
	wasmtimePath string
	wasmtimeErr  error
)

// wasmtimeWorker builds cmd/cloister-isolate-wasmtime once per test run.
func wasmtimeWorker(t testing.TB) string {
	t.Helper()
	wasmtimeOnce.Do(func() {
		start := time.Now()
		wasmtimePath, wasmtimeErr = workerbuild.BuildWasmtime()
		t.Logf("built cloister-isolate-wasmtime in %v", time.Since(start).Round(time.Millisecond))
	})
	if wasmtimeErr != nil {
		t.Fatal(wasmtimeErr)
	}
	return wasmtimePath
}

// TestEngineWasmtime runs the hostile-guest suite and the WASI-facing
// tests again with the wasmtime engine, through its own worker binary
// (in-process parts need the cloister_wasmtime tag and skip without it;
// scripts/test runs this package with the tag too).
func TestEngineWasmtime(t *testing.T) {
	wasmtimeWorker(t)
	testEngine = EngineWasmtime
	defer func() { testEngine = EngineWazero }()
	for _, tc := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"ReportNamesEngine", testReportNamesEngine},
		{"WASIConformance", TestWASIConformance},
		{"EmptyAndTrap", TestEmptyAndTrap},
		{"HostileInfiniteLoop", TestHostileInfiniteLoop},
		{"HostileDeepRecursion", TestHostileDeepRecursion},
		{"HostileMemory", TestHostileMemory},
		{"HostileOutputFlood", TestHostileOutputFlood},
		{"HostileManyFiles", TestHostileManyFiles},
		{"HostileFileSystemEscape", TestHostileFileSystemEscape},
		{"HostileWriteInput", TestHostileWriteInput},
		{"HostileNetworkDial", TestHostileNetworkDial},
		{"InvalidModules", TestInvalidModules},
		{"BadInputsAndEnv", TestBadInputsAndEnv},
		{"ExitStatusPassThrough", TestExitStatusPassThrough},
		{"Determinism", TestDeterminism},
		{"WarmPool", TestWarmPool},
	} {
		t.Run(tc.name, tc.f)
	}
}

func testReportNamesEngine(t *testing.T) {
	r := newRuntime(t, Options{})
	res := mustRun(t, r, &Config{Module: wasmExit(0)})
	if want := "wasmtime 39.0.1"; res.Report.Engine != want {
		t.Errorf("report engine %q, want %q", res.Report.Engine, want)
	}
	if !hasString(res.Report.Protections, "seccomp") {
		t.Errorf("protections %v: no seccomp", res.Report.Protections)
	}
}

// TestEnginesAgreeBytes runs a deterministic Go program working on
// integers and fixed-point numbers under both engines: stdout and every
// output must be identical bytes.
func TestEnginesAgreeBytes(t *testing.T) {
	mod := hostileGuest(t)
	run := func(engine string) *Result {
		r := newRuntime(t, Options{Engine: engine})
		cfg := &Config{Module: mod, Name: "determinism", Deterministic: true, Inputs: []Input{{Name: "data", Data: []byte("same input")}}, Timeout: time.Minute}
		cfg.Seed[0] = 7
		res := mustRun(t, r, cfg)
		wantOutcome(t, res, OutcomeExited, 0)
		return res
	}
	a, b := run(EngineWazero), run(EngineWasmtime)
	if !bytes.Equal(a.Stdout, b.Stdout) {
		t.Errorf("stdout differs:\nwazero:\n%s\nwasmtime:\n%s", a.Stdout, b.Stdout)
	}
	if len(a.Outputs) != len(b.Outputs) {
		t.Fatalf("%d outputs under wazero, %d under wasmtime", len(a.Outputs), len(b.Outputs))
	}
	for i := range a.Outputs {
		if !bytes.Equal(outputBytes(t, a.Outputs[i]), outputBytes(t, b.Outputs[i])) {
			t.Errorf("output %s differs", a.Outputs[i].Name)
		}
	}
	if a.Report.Engine == b.Report.Engine {
		t.Errorf("both reports name %q", a.Report.Engine)
	}
}
