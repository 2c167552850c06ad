package kernels

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/bench/kernels/kernel"
	"github.com/cloisterhq/cloister/isolate"
)

// spec is one kernel with its benchmark size (native Go takes roughly
// 50–150 ms on the reference machine) and a small size for the agreement
// test.
type spec struct {
	name           string
	size, testSize int
	native         func(n int) uint64
}

var specs = []spec{
	{"none", 0, 0, func(int) uint64 { return 0 }}, // start-up cost only
	{"intloop", 50_000_000, 100_000, kernel.IntLoop},
	{"matmul", 400, 40, kernel.MatMul},
	{"sha256", 64, 2, kernel.SHA256}, // MiB hashed
	{"sort", 500_000, 5_000, kernel.Sort},
	{"json", 20_000, 500, nil},       // records; native parses a prepared document
	{"nn", 500, 5, kernel.NN},        // 28×28 images through conv 3×3×8 + dense 64 + dense 10, float32
	{"aesgcm", 64, 1, kernel.AESGCM}, // MiB sealed with AES-256-GCM (no C version)
	{"groupby", 100, 1, nil},         // MB of CSV aggregated by key; native reads a prepared file
}

// inputFile is the input a kernel reads from /input ("" for none): the
// benchmark generates it once per size.
func inputFile(kernelName string) string {
	switch kernelName {
	case "json":
		return "doc.json"
	case "groupby":
		return "data.csv"
	}
	return ""
}

// hasHost says whether the kernel has a version with host primitives
// (bench/kernels/guestaccel).
func hasHost(kernelName string) bool {
	return kernelName == "none" || kernelName == "sha256" || kernelName == "aesgcm" || kernelName == "sort" || kernelName == "matmul"
}

// hasC says whether the C program implements the kernel.
func hasC(kernelName string) bool { return kernelName != "aesgcm" }

// env is everything built once per test binary.
type env struct {
	dir            string
	goWasm         []byte
	goAccelWasm    []byte // bench/kernels/guestaccel: sha256, aesgcm, sort and matmul with host primitives
	cWasm, cNative string // paths; "" when the compiler is missing
	cWasmBytes     []byte
	cAccelWasm     []byte // the C program with -DCLOISTER_ACCEL (sha256, sort and matmul by the host); nil without clang
	node           string // path of node; "" when missing
	inproc, jailed *isolate.Runtime
	// wasmtime runs in process when this test binary is built with
	// -tags cloister_wasmtime; nil otherwise (its rows skip).
	wasmtime *isolate.Runtime
	docs     map[string]string // kernel/size → directory holding its input
	mu       sync.Mutex
}

var (
	setupOnce sync.Once
	shared    *env
	setupErr  error
)

func TestMain(m *testing.M) {
	if isolate.IsWorker() {
		os.Exit(isolate.WorkerMain())
	}
	code := m.Run()
	if shared != nil {
		shared.inproc.Close()
		if shared.wasmtime != nil {
			shared.wasmtime.Close()
		}
		if shared.jailed != nil {
			shared.jailed.Close()
		}
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

func setup(tb testing.TB) *env {
	tb.Helper()
	setupOnce.Do(func() { shared, setupErr = build() })
	if setupErr != nil {
		tb.Fatal(setupErr)
	}
	return shared
}

func build() (*env, error) {
	dir, err := os.MkdirTemp("", "cloister-kernels-")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir, docs: map[string]string{}}
	goOut := filepath.Join(dir, "guest.wasm")
	cmd := exec.Command("go", "build", "-trimpath", "-o", goOut, "./guest")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the Go guest: %v\n%s", err, out)
	}
	if e.goWasm, err = os.ReadFile(goOut); err != nil {
		return nil, err
	}
	accelOut := filepath.Join(dir, "guestaccel.wasm")
	cmd = exec.Command("go", "build", "-trimpath", "-o", accelOut, "./guestaccel")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the Go guest with host primitives: %v\n%s", err, out)
	}
	if e.goAccelWasm, err = os.ReadFile(accelOut); err != nil {
		return nil, err
	}
	if clang, err := exec.LookPath("clang"); err == nil {
		e.cWasm = filepath.Join(dir, "kernels-c.wasm")
		args := []string{"--target=wasm32-wasi", "-O2", "-o", e.cWasm, "c/kernels.c"}
		if _, err := os.Stat("/usr/share/wasi-sysroot"); err == nil {
			args = append([]string{"--sysroot=/usr/share/wasi-sysroot"}, args...)
		}
		if out, err := exec.Command(clang, args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("clang for wasm32-wasi (install clang lld wasi-libc libclang-rt-14-dev-wasm32): %v\n%s", err, out)
		}
		if e.cWasmBytes, err = os.ReadFile(e.cWasm); err != nil {
			return nil, err
		}
		accel := filepath.Join(dir, "kernels-c-accel.wasm")
		args = append(args[:len(args)-3:len(args)-3], "-DCLOISTER_ACCEL", "-I", "../../guest/c", "-o", accel, "c/kernels.c")
		if out, err := exec.Command(clang, args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("clang -DCLOISTER_ACCEL: %v\n%s", err, out)
		}
		if e.cAccelWasm, err = os.ReadFile(accel); err != nil {
			return nil, err
		}
	}
	if gcc, err := exec.LookPath("gcc"); err == nil {
		e.cNative = filepath.Join(dir, "kernels-c")
		if out, err := exec.Command(gcc, "-O2", "-o", e.cNative, "c/kernels.c").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("gcc: %v\n%s", err, out)
		}
	}
	if node, err := exec.LookPath("node"); err == nil {
		e.node = node
	}
	if e.inproc, err = isolate.New(context.Background(), isolate.Options{
		DataDir: filepath.Join(dir, "data"), InProcess: true, InProcessNoCancel: true,
	}); err != nil {
		return nil, err
	}
	if slices.Contains(isolate.Engines(), isolate.EngineWasmtime) {
		if e.wasmtime, err = isolate.New(context.Background(), isolate.Options{
			InProcess: true, Engine: isolate.EngineWasmtime,
		}); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// jailedRuntime starts the jailed runtime on first use: the agreement test
// does not need it.
func (e *env) jailedRuntime(tb testing.TB) *isolate.Runtime {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.jailed == nil {
		rt, err := isolate.New(context.Background(), isolate.Options{DataDir: filepath.Join(e.dir, "data"), WarmWorkers: 1})
		if err != nil {
			tb.Fatal(err)
		}
		e.jailed = rt
	}
	return e.jailed
}

// doc returns the directory holding the kernel's input file for size n,
// and the input itself.
func (e *env) doc(tb testing.TB, name string, n int) (string, []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var d []byte
	switch name {
	case "json":
		d = kernel.JSONDoc(n)
	case "groupby":
		d = kernel.CSV(n)
	default:
		return "", nil
	}
	key := name + "/" + strconv.Itoa(n)
	if dir, ok := e.docs[key]; ok {
		return dir, d
	}
	dir := filepath.Join(e.dir, "input-"+name+"-"+strconv.Itoa(n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, inputFile(name)), d, 0o644); err != nil {
		tb.Fatal(err)
	}
	e.docs[key] = dir
	return dir, d
}

// nativeGo runs the kernel in this process.
func nativeGo(tb testing.TB, e *env, s spec, n int) uint64 {
	if s.native == nil {
		_, d := e.doc(tb, s.name, n)
		sum, err := nativeInput(s.name, d)
		if err != nil {
			tb.Fatal(err)
		}
		return sum
	}
	return s.native(n)
}

// nativeInput runs a kernel that reads its input.
func nativeInput(name string, d []byte) (uint64, error) {
	if name == "groupby" {
		return kernel.GroupBy(bytes.NewReader(d))
	}
	return kernel.JSONParse(d)
}

func parseSum(tb testing.TB, who string, out []byte) uint64 {
	tb.Helper()
	v, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		tb.Fatalf("%s: output %q is not a checksum", who, out)
	}
	return v
}

// inIsolate runs the module once through rt and returns its checksum.
func inIsolate(tb testing.TB, e *env, rt *isolate.Runtime, wasm []byte, s spec, n int) uint64 {
	cfg := &isolate.Config{
		Module: wasm, Args: []string{s.name, strconv.Itoa(n)},
		Memory: 1 << 30, Timeout: 10 * time.Minute,
	}
	if f := inputFile(s.name); f != "" {
		_, d := e.doc(tb, s.name, n)
		cfg.Inputs = []isolate.Input{{Name: f, Data: d}}
	}
	res, err := rt.Run(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if res.Report.Outcome != isolate.OutcomeExited || res.Report.ExitCode != 0 {
		tb.Fatalf("%s in isolate: outcome %s, exit %d, %s, stderr %q", s.name, res.Report.Outcome, res.Report.ExitCode, res.Report.Error, res.Stderr)
	}
	return parseSum(tb, "isolate", res.Stdout)
}

// nativeC runs the gcc-built program once (a process per run, as a native
// program would be started).
func nativeC(tb testing.TB, e *env, s spec, n int) uint64 {
	sum, _ := nativeCTimed(tb, e, s, n)
	return sum
}

// nativeCTimed also returns the CPU time (user + system) the process used.
func nativeCTimed(tb testing.TB, e *env, s spec, n int) (uint64, time.Duration) {
	args := []string{s.name, strconv.Itoa(n)}
	if f := inputFile(s.name); f != "" {
		dir, _ := e.doc(tb, s.name, n)
		args = append(args, filepath.Join(dir, f))
	}
	cmd := exec.Command(e.cNative, args...)
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("native C %s: %v", s.name, err)
	}
	return parseSum(tb, "native C", out), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// cpuTime returns the CPU time (user + system) used so far by this process
// (who = RUSAGE_SELF).
func cpuTime(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loop runs body b.N times and reports, besides wall time, the CPU time per
// run as cpu-ns/op: on a machine shared with other work, CPU time is the
// steadier measure of the work itself.
func loop(b *testing.B, who int, body func()) {
	b.ResetTimer()
	start := cpuTime(who)
	for i := 0; i < b.N; i++ {
		body()
	}
	b.ReportMetric(float64(cpuTime(who)-start)/float64(b.N), "cpu-ns/op")
}

// underNode runs the module iterations times in one node process and
// returns the time the iterations took (node's own start-up and the
// module's compilation excluded) and the checksum every iteration printed.
func underNode(tb testing.TB, e *env, wasmPath string, s spec, n, iterations int) (wall, cpu time.Duration, sum uint64) {
	outFile := filepath.Join(tb.TempDir(), "stdout")
	input := "-"
	if inputFile(s.name) != "" {
		input, _ = e.doc(tb, s.name, n)
	}
	cmd := exec.Command(e.node, "--no-warnings", "--expose-gc", "node/run.mjs", wasmPath, strconv.Itoa(iterations), outFile, input, s.name, strconv.Itoa(n))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("node %s: %v\n%s", s.name, err, stderr.Bytes())
	}
	var wallNS, cpuNS int64
	if _, err := fmt.Sscan(string(out), &wallNS, &cpuNS); err != nil {
		tb.Fatalf("node: timing %q: %v", out, err)
	}
	lines, err := os.ReadFile(outFile)
	if err != nil {
		tb.Fatal(err)
	}
	fields := strings.Fields(string(lines))
	if len(fields) != iterations {
		tb.Fatalf("node: %d checksums for %d iterations", len(fields), iterations)
	}
	sum = parseSum(tb, "node", []byte(fields[0]))
	for _, f := range fields[1:] {
		if f != fields[0] {
			tb.Fatalf("node: iterations disagree: %v", fields)
		}
	}
	return time.Duration(wallNS), time.Duration(cpuNS), sum
}

func (e *env) goWasmPath() string { return filepath.Join(e.dir, "guest.wasm") }

// TestKernelsAgree runs every implementation at a small size and requires
// native Go's checksum from each: the benchmark compares equal work only.
func TestKernelsAgree(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the Go guest and the C programs; skipped with -short")
	}
	e := setup(t)
	if e.cWasm == "" {
		t.Log("clang absent: C-as-Wasm rows not checked")
	}
	if e.cNative == "" {
		t.Log("gcc absent: native C rows not checked")
	}
	if e.node == "" {
		t.Log("node absent: Node.js rows not checked")
	}
	for _, s := range specs {
		want := nativeGo(t, e, s, s.testSize)
		check := func(who string, got uint64) {
			if got != want {
				t.Errorf("%s %s(%d) = %d, native Go %d", who, s.name, s.testSize, got, want)
			}
		}
		check("Go wasm (wazero)", inIsolate(t, e, e.inproc, e.goWasm, s, s.testSize))
		if e.wasmtime != nil {
			check("Go wasm (wasmtime)", inIsolate(t, e, e.wasmtime, e.goWasm, s, s.testSize))
		}
		if hasHost(s.name) {
			check("Go wasm, host primitives (wazero)", inIsolate(t, e, e.inproc, e.goAccelWasm, s, s.testSize))
			if e.wasmtime != nil {
				check("Go wasm, host primitives (wasmtime)", inIsolate(t, e, e.wasmtime, e.goAccelWasm, s, s.testSize))
			}
		}
		if !hasC(s.name) {
			continue
		}
		if e.cWasm != "" && hasHost(s.name) {
			check("C wasm, host primitives (wazero)", inIsolate(t, e, e.inproc, e.cAccelWasm, s, s.testSize))
			if e.wasmtime != nil {
				check("C wasm, host primitives (wasmtime)", inIsolate(t, e, e.wasmtime, e.cAccelWasm, s, s.testSize))
			}
		}
		if e.cWasm != "" {
			check("C wasm (wazero)", inIsolate(t, e, e.inproc, e.cWasmBytes, s, s.testSize))
			if e.wasmtime != nil {
				check("C wasm (wasmtime)", inIsolate(t, e, e.wasmtime, e.cWasmBytes, s, s.testSize))
			}
		}
		if e.cNative != "" {
			check("native C", nativeC(t, e, s, s.testSize))
		}
		if e.node != "" {
			// Two iterations: also checks that instances are freed
			// between runs (node v20 crashes otherwise).
			_, _, got := underNode(t, e, e.goWasmPath(), s, s.testSize, 2)
			check("Go wasm (node)", got)
			if e.cWasm != "" && hasC(s.name) {
				_, _, got = underNode(t, e, e.cWasm, s, s.testSize, 2)
				check("C wasm (node)", got)
			}
		}
	}
}

// BenchmarkKernel/KERNEL/RUNNER: one run of the kernel per iteration.
// RUNNER is native-go (a function call), wasm-go (Go guest, in-process
// wazero, compiled module cached), wasm-go-jailed (same through the jailed
// worker from a warm pool of one), wasm-go-node (same .wasm under Node.js
// WASI, fresh instance per iteration, compile excluded), native-c (gcc -O2
// binary, one process per run), wasm-c (clang -O2 for wasm32-wasi, wazero)
// and wasm-c-node.
func BenchmarkKernel(b *testing.B) {
	e := setup(b)
	for _, s := range specs {
		want := nativeGo(b, e, s, s.size)
		check := func(b *testing.B, got uint64) {
			if got != want {
				b.Fatalf("checksum %d, native Go %d", got, want)
			}
		}
		b.Run(s.name+"/native-go", func(b *testing.B) {
			var d []byte
			if s.native == nil {
				_, d = e.doc(b, s.name, s.size)
			}
			loop(b, syscall.RUSAGE_SELF, func() {
				if d != nil {
					sum, _ := nativeInput(s.name, d)
					check(b, sum)
				} else {
					check(b, s.native(s.size))
				}
			})
		})
		b.Run(s.name+"/wasm-go", func(b *testing.B) {
			inIsolate(b, e, e.inproc, e.goWasm, s, 0) // fill the compilation cache
			loop(b, syscall.RUSAGE_SELF, func() { check(b, inIsolate(b, e, e.inproc, e.goWasm, s, s.size)) })
		})
		b.Run(s.name+"/wasm-go-wasmtime", func(b *testing.B) {
			if e.wasmtime == nil {
				b.Skip("wasmtime not linked: go test -tags cloister_wasmtime")
			}
			inIsolate(b, e, e.wasmtime, e.goWasm, s, 0) // compile once
			loop(b, syscall.RUSAGE_SELF, func() { check(b, inIsolate(b, e, e.wasmtime, e.goWasm, s, s.size)) })
		})
		for _, row := range []struct {
			name string
			rt   func() *isolate.Runtime
		}{{"wasm-go-host", func() *isolate.Runtime { return e.inproc }}, {"wasm-go-wasmtime-host", func() *isolate.Runtime { return e.wasmtime }}} {
			b.Run(s.name+"/"+row.name, func(b *testing.B) {
				rt := row.rt()
				if !hasHost(s.name) || rt == nil {
					b.Skip("no host-primitive version, or wasmtime not linked (-tags cloister_wasmtime)")
				}
				inIsolate(b, e, rt, e.goAccelWasm, s, 0)
				loop(b, syscall.RUSAGE_SELF, func() { check(b, inIsolate(b, e, rt, e.goAccelWasm, s, s.size)) })
			})
		}
		b.Run(s.name+"/wasm-go-jailed", func(b *testing.B) {
			rt := e.jailedRuntime(b)
			inIsolate(b, e, rt, e.goWasm, s, 0)
			// Wall time only: the work happens in worker processes whose
			// CPU time this process learns only when it reaps them.
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				check(b, inIsolate(b, e, rt, e.goWasm, s, s.size))
			}
		})
		b.Run(s.name+"/wasm-go-node", func(b *testing.B) {
			if e.node == "" {
				b.Skip("node not installed")
			}
			wall, cpu, got := underNode(b, e, e.goWasmPath(), s, s.size, b.N)
			check(b, got)
			b.ReportMetric(float64(wall.Nanoseconds())/float64(b.N), "ns/op")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
		b.Run(s.name+"/native-c", func(b *testing.B) {
			if e.cNative == "" || !hasC(s.name) {
				b.Skip("gcc not installed, or no C version")
			}
			e.doc(b, s.name, s.size)
			b.ResetTimer()
			var cpu time.Duration
			for i := 0; i < b.N; i++ {
				sum, c := nativeCTimed(b, e, s, s.size)
				check(b, sum)
				cpu += c
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
		b.Run(s.name+"/wasm-c", func(b *testing.B) {
			if e.cWasm == "" || !hasC(s.name) {
				b.Skip("clang not installed, or no C version")
			}
			inIsolate(b, e, e.inproc, e.cWasmBytes, s, 0)
			loop(b, syscall.RUSAGE_SELF, func() { check(b, inIsolate(b, e, e.inproc, e.cWasmBytes, s, s.size)) })
		})
		b.Run(s.name+"/wasm-c-wasmtime", func(b *testing.B) {
			if e.cWasm == "" || !hasC(s.name) || e.wasmtime == nil {
				b.Skip("clang not installed, no C version, or wasmtime not linked (-tags cloister_wasmtime)")
			}
			inIsolate(b, e, e.wasmtime, e.cWasmBytes, s, 0)
			loop(b, syscall.RUSAGE_SELF, func() { check(b, inIsolate(b, e, e.wasmtime, e.cWasmBytes, s, s.size)) })
		})
		for _, row := range []struct {
			name string
			rt   func() *isolate.Runtime
		}{{"wasm-c-host", func() *isolate.Runtime { return e.inproc }}, {"wasm-c-wasmtime-host", func() *isolate.Runtime { return e.wasmtime }}} {
			b.Run(s.name+"/"+row.name, func(b *testing.B) {
				rt := row.rt()
				if !hasHost(s.name) || !hasC(s.name) || e.cAccelWasm == nil || rt == nil {
					b.Skip("no host-primitive version, no clang, or wasmtime not linked (-tags cloister_wasmtime)")
				}
				inIsolate(b, e, rt, e.cAccelWasm, s, 0)
				loop(b, syscall.RUSAGE_SELF, func() { check(b, inIsolate(b, e, rt, e.cAccelWasm, s, s.size)) })
			})
		}
		b.Run(s.name+"/wasm-c-node", func(b *testing.B) {
			if e.node == "" || e.cWasm == "" || !hasC(s.name) {
				b.Skip("node or clang not installed")
			}
			wall, cpu, got := underNode(b, e, e.cWasm, s, s.size, b.N)
			check(b, got)
			b.ReportMetric(float64(wall.Nanoseconds())/float64(b.N), "ns/op")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}
