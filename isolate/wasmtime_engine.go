//go:build cloister_wasmtime && cgo && linux

package isolate

// The wasmtime engine (Cranelift), linked only into binaries built with the
// cloister_wasmtime tag: cmd/cloister-isolate-wasmtime, and test binaries
// that run it in process. The guest sees the same WASI as under wazero —
// wasip1.go over the run's guestFS, not wasmtime's WASI, which opens host
// directories — and the same limits (decision 0140).

/*
#include <stdint.h>
typedef struct wasm_config_t wasm_config_t;
void wasmtime_config_memory_reservation_set(wasm_config_t *, uint64_t);
void wasmtime_config_memory_guard_size_set(wasm_config_t *, uint64_t);
void wasmtime_config_memory_reservation_for_growth_set(wasm_config_t *, uint64_t);
void wasmtime_config_profiler_set(wasm_config_t *, uint8_t);
*/
import "C"

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/bytecodealliance/wasmtime-go/v39"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/sys"

	"github.com/cloisterhq/cloister/internal/atomicfile"
)

// wasmtimeModule is the module path of the bindings (and of the engine
// library they carry).
const wasmtimeModule = "github.com/bytecodealliance/wasmtime-go/v39"

// wasmtimeVersionFallback names the version when the binary carries no
// module list (test binaries); go.mod pins this one.
const wasmtimeVersionFallback = "39.0.1"

// Memory layout of every guest memory: a 4 GiB reservation and a 32 MiB
// guard region after it, so that Cranelift elides bounds checks for all
// 32-bit addresses (guard pages trap instead). The worker's RLIMIT_AS
// makes room for it (wasmtimeAddressSpace).
const (
	wasmtimeReservation = 4 << 30
	wasmtimeGuard       = 32 << 20
)

// epochTick is how often the engines' epoch advances; a run's deadline is
// a number of ticks, checked by the guest's code at loop heads and
// function entries (epoch interruption).
const epochTick = 10 * time.Millisecond

func init() {
	v := moduleVersion(wasmtimeModule)
	if v == "" {
		v = wasmtimeVersionFallback
	}
	registerEngine(EngineWasmtime, engineFactory{version: v, make: func(cacheDir string) (jobExecutor, error) {
		return &wasmtimeExecutor{cacheDir: cacheDir, version: v}, nil
	}})
	engineAddressSpace[EngineWasmtime] = wasmtimeReservation + 2*wasmtimeGuard
}

// profilerEnv, set to "perfmap" in the environment of a process running
// the wasmtime engine in process (benchmarks, tests), makes the engine
// write /tmp/perf-PID.map, so that `perf report` names the guest's
// functions (bench/kernels, docs/performance-kernels.md "Profiles"). A
// jailed worker cannot write it (its root is empty) and is never asked to.
const profilerEnv = "CLOISTER_WASMTIME_PROFILER"

// wasmtimePerfmap is WASMTIME_PROFILING_STRATEGY_PERFMAP (wasmtime/config.h).
const wasmtimePerfmap = 3

// wasmtimeEngines are made once per process: one ordinary, one with NaN
// canonicalisation for deterministic runs (floats then give the same bits
// on every machine). Their epoch advances every epochTick.
var wasmtimeEngines = sync.OnceValue(func() [2]*wasmtime.Engine {
	var out [2]*wasmtime.Engine
	for i := range out {
		cfg := wasmtime.NewConfig()
		cfg.SetEpochInterruption(true)
		cfg.SetCraneliftNanCanonicalization(i == 1)
		cfg.SetCraneliftOptLevel(wasmtime.OptLevelSpeed)
		cfg.SetWasmThreads(false)
		cfg.SetDebugInfo(false)
		// Copy-on-write memory images need a memfd per instance, which
		// the worker's seccomp filter refuses: data segments are copied.
		cfg.SetMemoryInitCOWSet(false)
		// The Go struct's only field is the C config.
		p := *(**C.wasm_config_t)(unsafe.Pointer(cfg))
		C.wasmtime_config_memory_reservation_set(p, wasmtimeReservation)
		C.wasmtime_config_memory_guard_size_set(p, wasmtimeGuard)
		C.wasmtime_config_memory_reservation_for_growth_set(p, 0)
		if os.Getenv(profilerEnv) == "perfmap" {
			C.wasmtime_config_profiler_set(p, wasmtimePerfmap)
		}
		out[i] = wasmtime.NewEngineWithConfig(cfg)
	}
	go func() {
		for range time.Tick(epochTick) {
			out[0].IncrementEpoch()
			out[1].IncrementEpoch()
		}
	}()
	return out
})

// compiledKey names a compiled module: its SHA-256 and the engine
// configuration (deterministic runs canonicalise NaNs).
type compiledKey struct {
	sum [32]byte
	det bool
}

// compiledModules keeps the last few modules compiled in this process, so
// that an in-process runtime compiles a module once. The native code of a
// sealed module is never kept.
var compiledModules = &moduleMemo{max: 8, m: map[compiledKey]*wasmtime.Module{}}

type moduleMemo struct {
	mu    sync.Mutex
	max   int
	m     map[compiledKey]*wasmtime.Module
	order []compiledKey
}

func (c *moduleMemo) get(k compiledKey) *wasmtime.Module {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

// put keeps m; the oldest entry is dropped (and left to the garbage
// collector: a run may still use it) beyond max.
func (c *moduleMemo) put(k compiledKey, m *wasmtime.Module) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; ok {
		return
	}
	c.m[k] = m
	c.order = append(c.order, k)
	if len(c.order) > c.max {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
}

type wasmtimeExecutor struct {
	// cacheDir is the worker's own staging directory of the compilation
	// cache (decision 0142): the parent put there the authenticated
	// entries of the job's module, and keeps, authenticated, what the
	// worker leaves there. "" for none.
	cacheDir  string
	version   string
	preloaded *wasmtimePreloaded
}

type wasmtimePreloaded = preloaded[wasmtimeCode]

// wasmtimeCode is a preloaded module's code: compiled for ordinary runs
// (nil if it does not compile: the job says why), det for deterministic
// runs; the one the job is not likely to need only when the cache had it.
type wasmtimeCode struct {
	compiled, det *wasmtime.Module
}

func (e *wasmtimeExecutor) prepare(context.Context) { wasmtimeEngines() }

// preload prepares the code for the job's kind of run (det: with NaN
// canonicalisation), compiling it if the cache does not have it, and the
// other kind's too when the cache has it.
func (e *wasmtimeExecutor) preload(_ context.Context, module []byte, det bool) {
	sum := sha256.Sum256(module)
	pre := &wasmtimePreloaded{sum: sum, module: module}
	if det {
		pre.code.det, _ = e.compile(true, sum, module, true)
		pre.code.compiled = e.cached(false, sum)
	} else {
		pre.code.compiled, _ = e.compile(false, sum, module, true)
		pre.code.det = e.cached(true, sum)
	}
	e.preloaded = pre
}

// cacheVersionDir names the cache directory of the engine's compiled code:
// the bindings' version and this file's engine configuration (cacheConfig:
// change it with the configuration), one directory for deterministic
// runs' code (NaN canonicalisation). wasmtime itself also refuses code of
// another version or configuration.
func (e *wasmtimeExecutor) cacheVersionDir(det bool) string {
	d := "wasmtime-" + strings.TrimPrefix(e.version, "v") + "-" + wasmtimeCacheConfig
	if det {
		d += "-det"
	}
	return d
}

// wasmtimeCacheConfig names the engine configuration wasmtimeEngines
// makes (reservation, guard, optimisation level).
const wasmtimeCacheConfig = "c1"

// cachePath is where the code of module sum lives in the worker's cache.
func (e *wasmtimeExecutor) cachePath(det bool, sum [32]byte) string {
	return filepath.Join(e.cacheDir, e.cacheVersionDir(det), hex.EncodeToString(sum[:]))
}

// cached deserialises module sum's code from the worker's cache, nil if
// it is not there. What the cache holds was authenticated by the parent
// before it was put there (cache_linux.go): wasmtime trusts the native
// code it deserialises completely.
func (e *wasmtimeExecutor) cached(det bool, sum [32]byte) *wasmtime.Module {
	if e.cacheDir == "" {
		return nil
	}
	// Read, not mapped: the cache is mounted noexec, and wasmtime maps
	// the code of a file it deserialises executable.
	b, err := readPlainFile(e.cachePath(det, sum))
	if err != nil {
		return nil
	}
	m, err := wasmtime.NewModuleDeserialize(wasmtimeEngines()[btoi(det)], b)
	if err != nil {
		return nil
	}
	return m
}

// compile returns module's compiled code: from the cache, or compiled and
// (with keep, never for a sealed module) left in the cache for the parent
// to keep.
func (e *wasmtimeExecutor) compile(det bool, sum [32]byte, module []byte, keep bool) (*wasmtime.Module, error) {
	if keep {
		if m := e.cached(det, sum); m != nil {
			return m, nil
		}
	}
	m, err := compileWasmtime(wasmtimeEngines()[btoi(det)], module)
	if err != nil || !keep || e.cacheDir == "" {
		return m, err
	}
	if b, err := m.Serialize(); err == nil && len(b) <= maxCacheEntry {
		p := e.cachePath(det, sum)
		if os.MkdirAll(filepath.Dir(p), 0o700) == nil {
			// A new file (a new inode), so the parent can tell it from
			// the entry it gave.
			_ = atomicfile.WriteFile(p, b, 0o600, atomicfile.NoSync())
		}
	}
	return m, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (e *wasmtimeExecutor) holds(sum [32]byte) bool {
	return e.preloaded != nil && e.preloaded.sum == sum
}

// compileWasmtime compiles untrusted bytes; a panic becomes an error.
func compileWasmtime(engine *wasmtime.Engine, module []byte) (m *wasmtime.Module, err error) {
	defer func() {
		if p := recover(); p != nil {
			m, err = nil, fmt.Errorf("compiler failure: %v", p)
		}
	}()
	return wasmtime.NewModule(engine, module)
}

func valKindIs64(k wasmtime.ValKind) (bool, bool) {
	switch k {
	case wasmtime.KindI32:
		return false, true
	case wasmtime.KindI64:
		return true, true
	}
	return false, false
}

// checkWasmtimeImports refuses modules importing anything but the WASI
// functions (with their signatures) and, with hostCalls, HostModule's.
func checkWasmtimeImports(m *wasmtime.Module, hostCalls bool) error {
	var bad []string
	for _, it := range m.Imports() {
		mod, name := it.Module(), ""
		if it.Name() != nil {
			name = *it.Name()
		}
		ft := it.Type().FuncType()
		if ft == nil {
			bad = append(bad, fmt.Sprintf("%s.%s (not a function)", mod, name))
			continue
		}
		var want []bool
		results := 1
		switch f, ok := wasip1Functions[name]; {
		case mod == wasiModule && ok && wasiFunctions[name]:
			want = f.params
			if f.noRet {
				results = 0
			}
		case mod == HostModule && hostCalls && hostFunctions[name] != 0:
			want = make([]bool, hostFunctions[name])
		case mod == AccelModule && accelFunctions[name].fn != nil:
			want = make([]bool, accelFunctions[name].params)
		default:
			bad = append(bad, mod+"."+name)
			continue
		}
		if !sameSignature(ft, want, results) {
			bad = append(bad, fmt.Sprintf("%s.%s (wrong signature)", mod, name))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		if len(bad) > 20 {
			bad = append(bad[:20], fmt.Sprintf("and %d more", len(bad)-20))
		}
		return fmt.Errorf("the module imports host functions this runtime does not provide: %s", strings.Join(bad, ", "))
	}
	return nil
}

func sameSignature(ft *wasmtime.FuncType, params []bool, results int) bool {
	ps, rs := ft.Params(), ft.Results()
	if len(ps) != len(params) || len(rs) != results {
		return false
	}
	for i, p := range ps {
		if is64, ok := valKindIs64(p.Kind()); !ok || is64 != params[i] {
			return false
		}
	}
	for _, r := range rs {
		if is64, ok := valKindIs64(r.Kind()); !ok || is64 {
			return false
		}
	}
	return true
}

func funcType(params []bool, results int) *wasmtime.FuncType {
	kind := func(is64 bool) *wasmtime.ValType {
		if is64 {
			return wasmtime.NewValType(wasmtime.KindI64)
		}
		return wasmtime.NewValType(wasmtime.KindI32)
	}
	ps := make([]*wasmtime.ValType, len(params))
	for i, p := range params {
		ps[i] = kind(p)
	}
	rs := make([]*wasmtime.ValType, results)
	for i := range rs {
		rs[i] = kind(false)
	}
	return wasmtime.NewFuncType(ps, rs)
}

// wasiModule is WASI preview 1's import module.
const wasiModule = "wasi_snapshot_preview1"

// errExitTrap marks the trap that carries proc_exit out of the guest.
const exitTrapMessage = "cloister: proc_exit"

// trapWords say what a trap code means, in the words wazero's errors use.
var trapWords = map[wasmtime.TrapCode]string{
	wasmtime.StackOverflow:          "stack overflow",
	wasmtime.MemoryOutOfBounds:      "out of bounds memory access",
	wasmtime.HeapMisaligned:         "unaligned atomic",
	wasmtime.TableOutOfBounds:       "invalid table access",
	wasmtime.IndirectCallToNull:     "invalid table access (null function)",
	wasmtime.BadSignature:           "indirect call type mismatch",
	wasmtime.IntegerOverflow:        "integer overflow",
	wasmtime.IntegerDivisionByZero:  "integer divide by zero",
	wasmtime.BadConversionToInteger: "invalid conversion to integer",
	wasmtime.UnreachableCodeReached: "unreachable",
	wasmtime.OutOfFuel:              "out of fuel",
}

// wasmtimeTrapError puts the trap's kind before its backtrace (which
// trapMessage may cut).
func wasmtimeTrapError(t *wasmtime.Trap) error {
	words := "trap"
	if c := t.Code(); c != nil {
		if w, ok := trapWords[*c]; ok {
			words = w
		}
	}
	return fmt.Errorf("wasm error: %s\n%s", words, t.Message())
}

func (e *wasmtimeExecutor) execute(ctx context.Context, j *job, beforeRun func(), calls callTransport) (*Result, error) {
	pre, run, r, err := startJob(j, EngineWasmtime, &e.preloaded, true, nil)
	if r != nil || err != nil {
		return r, err
	}
	if j.Sealed {
		defer clear(j.Module)
	}
	rep, finish := &run.rep, run.finish
	engine := wasmtimeEngines()[btoi(j.Deterministic)]
	var mod *wasmtime.Module
	key := compiledKey{sum: j.ModuleSHA256, det: j.Deterministic}
	switch {
	case pre != nil && pre.code.compiled != nil && !j.Deterministic:
		mod = pre.code.compiled
	case pre != nil && pre.code.det != nil && j.Deterministic:
		mod = pre.code.det
	case !j.Sealed && compiledModules.get(key) != nil:
		mod = compiledModules.get(key)
	default:
		var err error
		// A sealed module's native code is never written anywhere.
		if mod, err = e.compile(j.Deterministic, j.ModuleSHA256, j.Module, !j.Sealed); err != nil {
			return finish(invalid(rep, "invalid module: %v", err)), nil
		}
		if j.Sealed {
			defer mod.Close()
		} else {
			// Kept for the next run in this process (in-process runtimes;
			// a worker runs one job).
			compiledModules.put(key, mod)
		}
	}
	startOK := false
	for _, ex := range mod.Exports() {
		if ex.Name() != "_start" {
			continue
		}
		ft := ex.Type().FuncType()
		if ft == nil {
			break
		}
		if len(ft.Params()) != 0 || len(ft.Results()) != 0 {
			return finish(invalid(rep, "the module's _start function takes parameters or returns results")), nil
		}
		startOK = true
	}
	if !startOK {
		return finish(invalid(rep, "the module exports no _start function (not a WASI command)")), nil
	}
	if err := checkWasmtimeImports(mod, calls != nil); err != nil {
		return finish(invalid(rep, "%v", err)), nil
	}

	stdout := &limitedBuffer{max: j.MaxStdio}
	stderr := &limitedBuffer{max: j.MaxStdio}
	name := j.Name
	if name == "" {
		name = "program.wasm"
	}
	for _, kv := range j.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return finish(invalid(rep, "environment entry %q is not KEY=VALUE", kv)), nil
		}
	}
	clk := newJobClocks(j)
	var w *wasiHost
	var gfs *guestFS
	if j.ConformanceRoot != "" {
		w = newWASIHost(sysfs.DirFS(j.ConformanceRoot), nil, append([]string{name}, j.Args...), j.Env, stdout, stderr)
	} else {
		var r *Result
		var err error
		if gfs, r, err = j.guestFS(rep, clk.walltime); r != nil || err != nil {
			if r != nil {
				r = finish(r)
			}
			return r, err
		}
		w = newWASIHost(gfs, gfs, append([]string{name}, j.Args...), j.Env, stdout, stderr)
	}
	defer w.close()
	w.walltime, w.nanotime, w.nanosleep, w.random = clk.walltime, clk.nanotime, clk.nanosleep, clk.random
	if j.Deterministic {
		w.realRes = 1
	}

	store := wasmtime.NewStore(engine)
	defer store.Close()
	store.Limiter(int64(j.Memory), -1, -1, -1, 1)
	linker := wasmtime.NewLinker(engine)
	defer linker.Close()
	// The guest's memory, once instantiated: looking it up by name on
	// every WASI call costs a cgo call and an allocation.
	var memory *wasmtime.Memory
	memOf := func(c *wasmtime.Caller) []byte {
		if memory != nil {
			return memory.UnsafeData(c)
		}
		if ext := c.GetExport("memory"); ext != nil {
			if m := ext.Memory(); m != nil {
				return m.UnsafeData(c)
			}
		}
		return nil
	}
	args := func(vals []wasmtime.Val) []uint64 {
		a := make([]uint64, len(vals))
		for i, v := range vals {
			if v.Kind() == wasmtime.KindI64 {
				a[i] = uint64(v.I64())
			} else {
				a[i] = uint64(uint32(v.I32()))
			}
		}
		return a
	}
	hc := &hostCalls{calls: j.Calls, t: calls}
	primitives := newAccelCounter(ctx, j)
	defined := map[string]bool{}
	for _, it := range mod.Imports() {
		if it.Name() == nil {
			continue
		}
		modName, fname := it.Module(), *it.Name()
		if defined[modName+"\x00"+fname] {
			continue
		}
		defined[modName+"\x00"+fname] = true
		var err error
		switch modName {
		case wasiModule:
			f := wasip1Functions[fname]
			results := 1
			if f.noRet {
				results = 0
			}
			err = linker.FuncNew(modName, fname, funcType(f.params, results), func(c *wasmtime.Caller, vals []wasmtime.Val) ([]wasmtime.Val, *wasmtime.Trap) {
				r := f.fn(w, memOf(c), args(vals))
				if w.exit != nil {
					return nil, wasmtime.NewTrap(exitTrapMessage)
				}
				if results == 0 {
					return nil, nil
				}
				return []wasmtime.Val{wasmtime.ValI32(int32(r))}, nil
			})
		case AccelModule:
			f := accelFunctions[fname]
			err = linker.FuncNew(modName, fname, funcType(make([]bool, f.params), 1), func(c *wasmtime.Caller, vals []wasmtime.Val) ([]wasmtime.Val, *wasmtime.Trap) {
				return []wasmtime.Val{wasmtime.ValI32(int32(primitives.call(fname, memOf(c), args(vals))))}, nil
			})
		case HostModule:
			fn := hc.call
			if fname == "response" {
				fn = hc.response
			}
			err = linker.FuncNew(modName, fname, funcType(make([]bool, hostFunctions[fname]), 1), func(c *wasmtime.Caller, vals []wasmtime.Val) ([]wasmtime.Val, *wasmtime.Trap) {
				return []wasmtime.Val{wasmtime.ValI32(int32(fn(memOf(c), args(vals))))}, nil
			})
		}
		if err != nil {
			return nil, fmt.Errorf("isolate: defining %s.%s: %w", modName, fname, err)
		}
	}

	// The deadline: the guest's code checks the epoch; j.Timeout from now.
	store.SetEpochDeadline(uint64(j.Timeout/epochTick) + 1)
	if beforeRun != nil {
		// The worker locks itself down here: after compiling and before
		// any guest code runs (a start section runs at instantiation).
		beforeRun()
	}
	var runErr error
	inst, err := linker.Instantiate(store, mod)
	if err != nil {
		runErr = err
	} else if f := inst.GetFunc(store, "_start"); f == nil {
		runErr = errors.New("no _start")
	} else {
		if ext := inst.GetExport(store, "memory"); ext != nil {
			memory = ext.Memory()
		}
		_, runErr = f.Call(store)
	}
	memSize := uint64(0)
	if inst != nil {
		if ext := inst.GetExport(store, "memory"); ext != nil && ext.Memory() != nil {
			memSize = uint64(ext.Memory().DataSize(store))
		}
	}

	res := &Result{Stdout: stdout.buf.Bytes(), Stderr: stderr.buf.Bytes()}
	rep.StdoutTruncated, rep.StderrTruncated = stdout.truncated, stderr.truncated
	// wasmtime's limiter does not say that it refused a growth: a run
	// that ended abnormally with its memory past half the ceiling is
	// counted as having met it.
	refused := memSize > j.Memory/2
	var trap *wasmtime.Trap
	switch {
	case w.exit != nil:
		if w.exit.code == 0 {
			runErr = nil
		} else {
			runErr = sys.NewExitError(w.exit.code)
		}
		classify(rep, runErr, refused, nil)
	case errors.As(runErr, &trap) && trap.Code() != nil && *trap.Code() == wasmtime.Interrupt:
		rep.Outcome, rep.ExitCode, rep.Error = OutcomeTimeout, ExitTimeout, "wall-clock limit reached"
	case runErr != nil && strings.Contains(runErr.Error(), errRunEnded.Error()):
		rep.Outcome, rep.ExitCode, rep.Error = OutcomeTimeout, ExitTimeout, "wall-clock limit reached while a host call waited"
	case errors.As(runErr, &trap):
		classify(rep, wasmtimeTrapError(trap), refused, nil)
	default:
		classify(rep, runErr, refused, nil)
	}
	if gfs != nil {
		if res.layouts, rep.OutputLimitsHit, err = gfs.collect(); err != nil {
			return nil, err
		}
	}
	rep.HostPrimitives = primitives.calls.Load()
	setWarnings(rep, j)
	res.Report = *rep
	return finish(res), nil
}
