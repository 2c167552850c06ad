package isolatebench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/cloisterhq/cloister/isolate"
)

func TestMain(m *testing.M) {
	if isolate.IsWorker() {
		os.Exit(isolate.WorkerMain())
	}
	os.Exit(m.Run())
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
func BenchmarkRunOverhead(b *testing.B) {
	b.Run("inprocess", func(b *testing.B) { benchRun(b, isolate.Options{InProcess: true}, emptyStart) })
	b.Run("worker-cold", func(b *testing.B) { benchRun(b, isolate.Options{}, emptyStart) })
	b.Run("worker-warm", func(b *testing.B) { benchRun(b, isolate.Options{WarmWorkers: 2}, emptyStart) })
}

// BenchmarkRunOverheadC: the same with a small C program (wasi-libc
// start-up, printf).
func BenchmarkRunOverheadC(b *testing.B) {
	m := cModule(b)
	b.Run("inprocess", func(b *testing.B) { benchRun(b, isolate.Options{InProcess: true}, m) })
	b.Run("worker-cold", func(b *testing.B) { benchRun(b, isolate.Options{}, m) })
	b.Run("worker-warm", func(b *testing.B) { benchRun(b, isolate.Options{WarmWorkers: 2}, m) })
}

// BenchmarkCachedInstantiate measures a small C module whose compiled code
// is cached, two ways:
//
//   - fresh-runtime-disk-cache: a new wazero runtime loads the compiled code
//     from the on-disk cache, then instantiates and runs it (its main returns
//     at once). This is what every jailed worker pays for a module seen
//     before; load-p50-ms is the loading part alone.
//   - compiled-in-memory: instantiating and running an already loaded
//     CompiledModule, as a long-lived in-process runtime does.
//
// Both use the worker's runtime configuration (compiler, no DWARF parsing).
func BenchmarkCachedInstantiate(b *testing.B) {
	m := cModule(b)
	ctx := context.Background()
	config := func(c wazero.CompilationCache) wazero.RuntimeConfig {
		return wazero.NewRuntimeConfigCompiler().WithCompilationCache(c).WithDebugInfoEnabled(false)
	}
	b.Run("fresh-runtime-disk-cache", func(b *testing.B) {
		dir := b.TempDir()
		once := func() (time.Duration, time.Duration) {
			start := time.Now()
			// A separate cache object per iteration, as a new worker
			// process has: only the on-disk entries are shared.
			c, err := wazero.NewCompilationCacheWithDir(dir)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close(ctx)
			rt := wazero.NewRuntimeWithConfig(ctx, config(c))
			defer rt.Close(ctx)
			wasi_snapshot_preview1.MustInstantiate(ctx, rt)
			cm, err := rt.CompileModule(ctx, m)
			if err != nil {
				b.Fatal(err)
			}
			loaded := time.Since(start)
			mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithArgs("small"))
			if err != nil {
				b.Fatal(err)
			}
			mod.Close(ctx)
			return loaded, time.Since(start)
		}
		once() // fill the disk cache
		var loads, totals []time.Duration
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			l, t := once()
			loads = append(loads, l)
			totals = append(totals, t)
		}
		b.StopTimer()
		sort.Slice(loads, func(i, j int) bool { return loads[i] < loads[j] })
		b.ReportMetric(float64(loads[len(loads)/2].Microseconds())/1000, "load-p50-ms")
		reportP50(b, totals)
	})
	b.Run("compiled-in-memory", func(b *testing.B) {
		c := wazero.NewCompilationCache()
		defer c.Close(ctx)
		rt := wazero.NewRuntimeWithConfig(ctx, config(c))
		defer rt.Close(ctx)
		wasi_snapshot_preview1.MustInstantiate(ctx, rt)
		cm, err := rt.CompileModule(ctx, m)
		if err != nil {
			b.Fatal(err)
		}
		var ds []time.Duration
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName("").WithArgs("small"))
			if err != nil {
				b.Fatal(err)
			}
			mod.Close(ctx)
			ds = append(ds, time.Since(start))
		}
		b.StopTimer()
		reportP50(b, ds)
	})
}
