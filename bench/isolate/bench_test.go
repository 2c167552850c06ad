package isolatebench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/cloisterhq/cloister/internal/workerbuild"
	"github.com/cloisterhq/cloister/isolate"
)

// leanWorker is cmd/cloister-isolate, built by TestMain: the `-lean`
// sub-benchmarks start workers from it, the others re-execute this test
// binary (as a node without cloister-isolate next to it does).
var leanWorker string

func TestMain(m *testing.M) {
	if isolate.IsWorker() {
		os.Exit(isolate.WorkerMain())
	}
	var err error
	if leanWorker, err = workerbuild.Build(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	workerbuild.Cleanup()
	os.Exit(code)
}

// emptyStart is the smallest WASI command: an exported memory and an empty
// _start.
var emptyStart = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
	0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type () -> ()
	0x03, 0x02, 0x01, 0x00, // one function of type 0
	0x05, 0x03, 0x01, 0x00, 0x01, // memory, min 1 page
	0x07, 0x13, 0x02, 0x06, '_', 's', 't', 'a', 'r', 't', 0x00, 0x00, 0x06, 'm', 'e', 'm', 'o', 'r', 'y', 0x02, 0x00,
	0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // empty body
}

// cModule builds a small C program with clang for wasm32-wasi, or skips the
// benchmark when clang or the WASI sysroot is not installed.
func cModule(b *testing.B) []byte {
	b.Helper()
	clang, err := exec.LookPath("clang")
	if err != nil {
		b.Skip("clang is not installed: the C-module benchmark needs clang with a wasm32-wasi sysroot")
	}
	dir := b.TempDir()
	src := filepath.Join(dir, "small.c")
	const prog = `#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
	unsigned h = 2166136261u;
	for (int i = 0; i < argc; i++)
		for (const char *p = argv[i]; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
	printf("%08x\n", h);
	return 0;
}
`
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, "small.wasm")
	if msg, err := exec.Command(clang, "--target=wasm32-wasi", "-O2", "-o", out, src).CombinedOutput(); err != nil {
		b.Skipf("clang cannot build for wasm32-wasi here (WASI sysroot missing?): %v: %s", err, msg)
	}
	m, err := os.ReadFile(out)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// p50 reports the median of the per-run durations as a custom metric.
func reportP50(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(d[len(d)*9/10].Microseconds())/1000, "p90-ms")
}

func benchRun(b *testing.B, opts isolate.Options, module []byte) {
	opts.DataDir = b.TempDir()
	rt, err := isolate.New(context.Background(), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	cfg := &isolate.Config{Module: module, Timeout: 10 * time.Second}
	// Fill the compilation cache (and the pool) before timing.
	for i := 0; i < 3; i++ {
		if _, err := rt.Run(context.Background(), cfg); err != nil {
			b.Fatal(err)
		}
	}
	var ds []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if opts.WarmWorkers > 0 {
			// Give the pool time to refill, as it would between requests;
			// this pause is not timed.
			b.StopTimer()
			time.Sleep(50 * time.Millisecond)
			b.StartTimer()
		}
		start := time.Now()
		res, err := rt.Run(context.Background(), cfg)
		ds = append(ds, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		if res.Report.Outcome != isolate.OutcomeExited || res.Report.ExitCode != 0 {
			b.Fatalf("outcome %s/%d: %s", res.Report.Outcome, res.Report.ExitCode, res.Report.Error)
		}
	}
	b.StopTimer()
	reportP50(b, ds)
}

// BenchmarkRunOverhead: the trivial module through each execution path.
// The difference between "warm" and "inprocess" is the jail's overhead.
func BenchmarkRunOverhead(b *testing.B) { benchPaths(b, emptyStart) }

// benchPaths runs module through each execution path: in process, and in
// cold and warm workers that are this test binary re-executed or the lean
// cloister-isolate.
func benchPaths(b *testing.B, module []byte) {
	b.Run("inprocess", func(b *testing.B) { benchRun(b, isolate.Options{InProcess: true}, module) })
	for _, w := range []struct{ suffix, bin string }{{"", isolate.WorkerBinarySelf}, {"-lean", leanWorker}} {
		b.Run("worker-cold"+w.suffix, func(b *testing.B) { benchRun(b, isolate.Options{WorkerBinary: w.bin}, module) })
		b.Run("worker-warm"+w.suffix, func(b *testing.B) { benchRun(b, isolate.Options{WarmWorkers: 2, WorkerBinary: w.bin}, module) })
	}
}

// BenchmarkRunOverheadC: the same with a small C program (wasi-libc
// start-up, printf).
func BenchmarkRunOverheadC(b *testing.B) { benchPaths(b, cModule(b)) }

// BenchmarkCachedInstantiate measures a small C module whose compiled code
// is cached, as the jailed worker meets it once its job has arrived:
//
//   - preloaded-worker: the module was compiled (loaded from the disk
//     cache) while the warm worker waited, because the last job ran it
//     (Options.WarmWorkers; the common case of a node running one program
//     again): instantiate and run. This is what the job waits for.
//   - blank-worker: a warm worker whose runtime (with WASI) was made while
//     it waited, but which holds no module: load the compiled code from the
//     disk cache (wazero validates the module first), instantiate and run.
//     load-p50-ms is the loading part alone.
//   - fresh-runtime-disk-cache: all of it, cache and runtime included (a
//     cold worker). load-p50-ms is everything up to instantiation.
//
// All use the worker's runtime configuration (compiler, no DWARF parsing),
// a separate cache object and runtime per iteration (a worker is a new
// process: only the on-disk entries are shared), and a C program whose main
// returns at once.
func BenchmarkCachedInstantiate(b *testing.B) {
	m := cModule(b)
	ctx := context.Background()
	config := func(c wazero.CompilationCache) wazero.RuntimeConfig {
		return wazero.NewRuntimeConfigCompiler().WithCompilationCache(c).WithDebugInfoEnabled(false)
	}
	dir := b.TempDir()
	newRuntime := func() (wazero.Runtime, func()) {
		c, err := wazero.NewCompilationCacheWithDir(dir)
		if err != nil {
			b.Fatal(err)
		}
		rt := wazero.NewRuntimeWithConfig(ctx, config(c))
		wasi_snapshot_preview1.MustInstantiate(ctx, rt)
		return rt, func() { rt.Close(ctx); c.Close(ctx) }
	}
	compile := func(rt wazero.Runtime) wazero.CompiledModule {
		cm, err := rt.CompileModule(ctx, m)
		if err != nil {
			b.Fatal(err)
		}
		return cm
	}
	instantiate := func(rt wazero.Runtime, cm wazero.CompiledModule) {
		mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName("").WithArgs("small"))
		if err != nil {
			b.Fatal(err)
		}
		mod.Close(ctx)
	}
	{ // fill the disk cache
		rt, done := newRuntime()
		compile(rt)
		done()
	}
	b.Run("preloaded-worker", func(b *testing.B) {
		var ds []time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			rt, done := newRuntime()
			cm := compile(rt)
			b.StartTimer()
			start := time.Now()
			instantiate(rt, cm)
			ds = append(ds, time.Since(start))
			b.StopTimer()
			done()
			b.StartTimer()
		}
		b.StopTimer()
		reportP50(b, ds)
	})
	b.Run("blank-worker", func(b *testing.B) {
		var loads, ds []time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			rt, done := newRuntime()
			b.StartTimer()
			start := time.Now()
			cm := compile(rt)
			loads = append(loads, time.Since(start))
			instantiate(rt, cm)
			ds = append(ds, time.Since(start))
			b.StopTimer()
			done()
			b.StartTimer()
		}
		b.StopTimer()
		sort.Slice(loads, func(i, j int) bool { return loads[i] < loads[j] })
		b.ReportMetric(float64(loads[len(loads)/2].Microseconds())/1000, "load-p50-ms")
		reportP50(b, ds)
	})
	b.Run("fresh-runtime-disk-cache", func(b *testing.B) {
		var loads, ds []time.Duration
		for i := 0; i < b.N; i++ {
			start := time.Now()
			rt, done := newRuntime()
			cm := compile(rt)
			loads = append(loads, time.Since(start))
			instantiate(rt, cm)
			ds = append(ds, time.Since(start))
			b.StopTimer()
			done()
			b.StartTimer()
		}
		b.StopTimer()
		sort.Slice(loads, func(i, j int) bool { return loads[i] < loads[j] })
		b.ReportMetric(float64(loads[len(loads)/2].Microseconds())/1000, "load-p50-ms")
		reportP50(b, ds)
	})
}
