package isolatebench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/bench/internal/measure"
	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/isolate"
)

// Inputs larger than memory (issue: a 2 GiB input digested by a guest
// under --memory 64MiB, every process's peak RSS ≤ 256 MB, throughput ≥
// 70 % of the same guest on a 64 MiB input per byte). The guest is
// examples/sha256sum; the input a file in the data directory, handed to
// the worker as a read-only descriptor (decision 0070). Figures per size:
// MB/s of wall clock and per CPU-second of the worker, the worker's and
// this process's (the node's part) peak RSS.
//
//	go test ./bench/isolate -run '^$' -bench LargeInput -benchtime 1x -count 3

// writeRandomFile writes n pseudo-random bytes to path, 1 MiB at a time.
func writeRandomFile(tb testing.TB, path string, n int64) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 1<<20)
	for left := n; left > 0; left -= int64(len(buf)) {
		b := buf[:min(int64(len(buf)), left)]
		r.Read(b)
		if _, err := f.Write(b); err != nil {
			tb.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

func BenchmarkLargeInput(b *testing.B) {
	prog, err := examples.Lookup("sha256sum")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	rt, err := isolate.New(context.Background(), isolate.Options{DataDir: dir, WorkerBinary: leanWorker})
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	for _, size := range []int64{64 << 20, 2 << 30} {
		path := filepath.Join(dir, fmt.Sprintf("input-%d", size))
		writeRandomFile(b, path, size)
		cfg := &isolate.Config{Module: prog.Wasm, Name: "sha256sum.wasm", Memory: 64 << 20, MaxOutput: 1 << 20,
			Timeout: 10 * time.Minute, Inputs: []isolate.Input{{Name: "big.bin", Path: path}}}
		if size == 64<<20 {
			// Compile once into the cache and read the file once, not
			// timed.
			if res, err := rt.Run(context.Background(), cfg); err != nil {
				b.Fatal(err)
			} else {
				res.Close()
			}
		}
		b.Run(sizeName(size), func(b *testing.B) {
			b.SetBytes(size)
			var cpu time.Duration
			var worker, self int64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s := measure.StartRSS(os.Getpid(), 100*time.Millisecond)
				res, err := rt.Run(context.Background(), cfg)
				peaks := s.Stop()
				cpu += measure.ChildrenCPU(peaks, os.Getpid())
				if err != nil {
					b.Fatal(err)
				}
				if res.Report.Outcome != isolate.OutcomeExited || res.Report.ExitCode != 0 {
					b.Fatalf("%s/%d: %s", res.Report.Outcome, res.Report.ExitCode, res.Report.Error)
				}
				if !strings.Contains(string(res.Stdout), "big.bin") {
					b.Fatalf("stdout %q", res.Stdout)
				}
				res.Close()
				ps, pw := measure.Of(peaks, os.Getpid())
				self, worker = max(self, ps), max(worker, pw)
			}
			b.StopTimer()
			b.ReportMetric(float64(size)*float64(b.N)/cpu.Seconds()/1e6, "worker-MB/cpu-s")
			b.ReportMetric(float64(worker)/(1<<20), "worker-peak-MiB")
			b.ReportMetric(float64(self)/(1<<20), "parent-peak-MiB")
		})
		os.Remove(path)
	}
}

func sizeName(n int64) string {
	if n >= 1<<30 {
		return fmt.Sprintf("%dGiB", n>>30)
	}
	return fmt.Sprintf("%dMiB", n>>20)
}

// BenchmarkHostCallRoundTrip: a host call's round trip, guest → worker →
// the runtime's owner (the node) → back, for a 1 KiB request and
// response, timed by the guest's own clock around each call
// (testdata/callloop, 20 000 calls after 200 not counted), in a jailed
// worker and in process side by side. Target: p50 ≤ 50 µs.
//
//	go test ./bench/isolate -run '^$' -bench HostCallRoundTrip -benchtime 1x -count 3
func BenchmarkHostCallRoundTrip(b *testing.B) {
	module := measure.BuildGuest(b, "./testdata/callloop")
	echo := map[string]isolate.HostCall{"bench.echo/v1": {Handle: func(_ context.Context, req []byte) ([]byte, error) { return req, nil }}}
	for _, mode := range []struct {
		name string
		opts isolate.Options
	}{
		{"worker", isolate.Options{WorkerBinary: leanWorker}},
		{"in-process", isolate.Options{InProcess: true}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			opts := mode.opts
			opts.DataDir = b.TempDir()
			rt, err := isolate.New(context.Background(), opts)
			if err != nil {
				b.Fatal(err)
			}
			defer rt.Close()
			const calls = 20000
			cfg := &isolate.Config{Module: module, Name: "callloop", Args: []string{fmt.Sprint(calls), "1024"}, Memory: 64 << 20,
				Timeout: 10 * time.Minute, HostCalls: echo, CallRate: 1e9}
			var p50, p90, p99, total float64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				res, err := rt.Run(context.Background(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				if res.Report.Outcome != isolate.OutcomeExited || res.Report.ExitCode != 0 {
					b.Fatalf("%s/%d: %s %s", res.Report.Outcome, res.Report.ExitCode, res.Report.Error, res.Stderr)
				}
				var r map[string]int64
				if err := json.Unmarshal(res.Stdout, &r); err != nil {
					b.Fatalf("stdout %q: %v", res.Stdout, err)
				}
				res.Close()
				p50 += float64(r["p50_ns"]) / 1e3
				p90 += float64(r["p90_ns"]) / 1e3
				p99 += float64(r["p99_ns"]) / 1e3
				total += float64(r["total_ns"]) / calls / 1e3
			}
			b.StopTimer()
			n := float64(b.N)
			b.ReportMetric(p50/n, "p50-µs")
			b.ReportMetric(p90/n, "p90-µs")
			b.ReportMetric(p99/n, "p99-µs")
			b.ReportMetric(total/n, "mean-µs")
		})
	}
}
