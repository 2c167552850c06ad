package kernels

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/workerbuild"
	"github.com/cloisterhq/cloister/isolate"
)

// BenchmarkJailedStart/ENGINE/MODE: one jailed run of the Go guest's
// `none` kernel (a 3–4 MB module that starts and exits) per iteration,
// through each engine's own worker binary. MODE says where the compiled
// code comes from: compile (no data directory: every worker compiles
// the module), cached (the authenticated disk cache, a fresh worker per
// run that loads its entry; decision 0142) and warm (a pool of one
// worker, preloaded with the module while it waits). Reports the wall
// time per run and the worker's CPU time (the report's cpu_ms).
func BenchmarkJailedStart(b *testing.B) {
	e := setup(b)
	for _, engine := range []string{isolate.EngineWazero, isolate.EngineWasmtime} {
		bin, err := workerbuild.Build()
		if engine == isolate.EngineWasmtime {
			bin, err = workerbuild.BuildWasmtime()
		}
		if err != nil {
			b.Fatal(err)
		}
		for _, mode := range []string{"compile", "cached", "warm"} {
			b.Run(engine+"/"+mode, func(b *testing.B) {
				opts := isolate.Options{Engine: engine, WorkerBinary: bin}
				if mode != "compile" {
					opts.DataDir = filepath.Join(b.TempDir(), "data")
				}
				if mode == "warm" {
					opts.WarmWorkers = 1
				}
				rt, err := isolate.New(context.Background(), opts)
				if err != nil {
					b.Fatal(err)
				}
				defer rt.Close()
				run := func() int64 {
					res, err := rt.Run(context.Background(), &isolate.Config{Module: e.goWasm, Args: []string{"none", "0"}, Timeout: 10 * time.Minute})
					if err != nil {
						b.Fatal(err)
					}
					defer res.Close()
					if res.Report.Outcome != isolate.OutcomeExited || res.Report.ExitCode != 0 {
						b.Fatalf("outcome %s, %s", res.Report.Outcome, res.Report.Error)
					}
					if res.Report.CPUMS == nil {
						return 0
					}
					return *res.Report.CPUMS
				}
				if mode != "compile" {
					run()
					time.Sleep(time.Second) // the first worker reaped, its entry kept
				}
				var cpu int64
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					cpu += run()
					if mode == "warm" {
						b.StopTimer()
						time.Sleep(300 * time.Millisecond) // the pool refilled and preloaded
						b.StartTimer()
					}
				}
				b.ReportMetric(float64(cpu)/float64(b.N), "cpu-worker-ms/op")
			})
		}
	}
}
