package isolate

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/cloisterhq/cloister/sealed"
)

// Deterministic clocks (Config.Deterministic): the wall clock reads
// DeterministicEpoch forever; the monotonic clock starts at zero and advances
// by DeterministicTick on every reading (and by the requested duration on
// every sleep, which returns at once).
var DeterministicEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// DeterministicTick is how far the deterministic monotonic clock advances per
// reading.
const DeterministicTick = time.Millisecond

// job is a Config resolved for execution: defaults applied, inputs opened.
// It is what the parent sends to the worker.
type job struct {
	// Module is nil when the worker already holds it (preloaded) and
	// ModuleSHA256 names it. It travels as a raw blob (protocol.go).
	Module       []byte   `json:"-"`
	ModuleSHA256 [32]byte // computed once, by the parent
	Name         string
	Args         []string
	Env          []string
	// InputNames names the input descriptors, in their order.
	InputNames []string `json:",omitempty"`
	// Calls are the host calls the guest may make, sorted by name.
	Calls []jobCall
	// Sealed says the module comes as a sealed file (a descriptor) to be
	// opened with the key "module" of the secret frame; SealedInputs names
	// the inputs that are sealed files, each opened with "input/NAME".
	Sealed         bool
	SealedInputs   []string
	Memory         uint64
	Timeout        time.Duration
	MaxOutput      int64
	MaxOutputFiles int
	MaxStdio       int64
	Deterministic  bool
	Seed           [32]byte
	// ConformanceRoot is a host directory preopened as "/" (tests only).
	ConformanceRoot string
	// Cancel makes wazero stop the guest when ctx ends (in-process runs
	// only; the worker is killed instead).
	Cancel bool
	// SelfTest makes the worker probe its own jail after running (tests).
	SelfTest bool

	// The descriptors travel beside the frame (SCM_RIGHTS), never in it:
	// the output area, then one per input in InputNames order. In the
	// parent they are its own, closed when Run returns (the area is kept
	// by the Result); in the worker, received with the job.
	area   *os.File
	module *os.File // a sealed module (Sealed)
	inputs []*os.File
	// keys open the sealed module and inputs: they travel in the secret
	// frame, never in the job's header, and are zeroed when the run ends.
	keys map[string]*sealed.Key
}

// Names of keys in the secret frame.
const secretModule = "module"

func secretInput(name string) string { return "input/" + name }

// maxJobFiles bounds the descriptors of one job: the output area and the
// inputs (one SCM_RIGHTS message carries at most 253).
const maxJobFiles = 250

// executor compiles and runs jobs in the current process.
type executor struct {
	cache wazero.CompilationCache // may be nil
	// prepared is a runtime made ahead of the job (a warm worker does this
	// while it waits), without cancellation checks. Used once.
	prepared wazero.Runtime
	// preloaded is a module compiled in prepared ahead of the job (a warm
	// worker told which module the next job is likely to run).
	preloaded *preloadedModule
}

// preloaded is a module a warm worker compiled (in practice: loaded from
// the compilation cache) while waiting for its job, and its engine's code
// (C) for it.
type preloaded[C any] struct {
	sum    [32]byte
	module []byte
	code   C
}

// preloadedModule is wazero's: the compiled module, nil if it does not
// compile (the job reports why).
type preloadedModule = preloaded[wazero.CompiledModule]

// startJob takes an executor's preloaded module out of *slot for job j —
// kept when it is j's module, not sealed and usable, else dropped (drop,
// when set, releases its code) before any guest code runs — and starts
// the run of j by engine: its report, and j.Module loaded (beginRun).
func startJob[C any](j *job, engine string, slot **preloaded[C], usable bool, drop func(C)) (*preloaded[C], *runStart, *Result, error) {
	start := time.Now()
	pre := *slot
	*slot = nil
	if pre != nil && (pre.sum != j.ModuleSHA256 || j.Sealed || !usable) {
		if drop != nil {
			drop(pre.code)
		}
		pre = nil
	}
	var held []byte
	if pre != nil {
		held = pre.module
	}
	run, r, err := beginRun(j, engine, start, held)
	return pre, run, r, err
}

// preload compiles module in the prepared runtime ahead of the job.
// wazero compiles deterministic runs' code the same way: det is ignored.
func (e *executor) preload(ctx context.Context, module []byte, _ bool) {
	if e.prepared == nil {
		return
	}
	cm, err := compileGuarded(ctx, e.prepared, module)
	if err != nil {
		cm = nil
	}
	e.preloaded = &preloadedModule{sum: sha256.Sum256(module), module: module, code: cm}
}

// prepare makes the runtime ahead of the job (without cancellation checks).
func (e *executor) prepare(ctx context.Context) {
	if rt, err := e.newRuntime(ctx, false); err == nil {
		e.prepared = rt
	}
	// The WASI definitions are made once: pay for them now, off the job's
	// path.
	_, _ = wasiDefinitions()
}

func (e *executor) holds(sum [32]byte) bool {
	return e.preloaded != nil && e.preloaded.sum == sum
}

// errNotPreloaded: the parent sent a job without its module to a worker that
// does not hold that module. The parent's pool never does.
var errNotPreloaded = errors.New("isolate: the job names a module this worker has not preloaded")

// newRuntime makes a wazero runtime (WASI is instantiated per job, with the
// functions the guest imports: instantiateWASI). DWARF parsing is
// off: it costs milliseconds per load and only adds source lines to trap
// messages.
func (e *executor) newRuntime(ctx context.Context, cancel bool) (wazero.Runtime, error) {
	rc := wazero.NewRuntimeConfigCompiler().WithCloseOnContextDone(cancel).WithDebugInfoEnabled(false)
	if e.cache != nil {
		rc = rc.WithCompilationCache(e.cache)
	}
	return wazero.NewRuntimeWithConfig(ctx, rc), nil
}

// limitedBuffer keeps the first max bytes written and drops the rest,
// remembering that it did. Writes never fail, so a guest flooding stdout is
// neither slowed down nor told.
type limitedBuffer struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	max       int64
	truncated bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	room := l.max - int64(l.buf.Len())
	if int64(len(p)) > room {
		l.truncated = true
		if room > 0 {
			l.buf.Write(p[:room])
		}
		return len(p), nil
	}
	l.buf.Write(p)
	return len(p), nil
}

// seededReader derives the guest's random bytes from the seed with ChaCha8
// (a cryptographically strong generator), domain-separated so the same seed
// used elsewhere in Cloister yields unrelated bytes.
func seededReader(seed [32]byte) io.Reader {
	key := sha256.Sum256(append([]byte("cloister isolate random v1\x00"), seed[:]...))
	return rand.NewChaCha8(key)
}

type detClock struct {
	mu  sync.Mutex
	now int64
}

func (c *detClock) nanotime() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now += int64(DeterministicTick)
	return c.now
}

func (c *detClock) sleep(ns int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ns > 0 {
		c.now += ns
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func invalid(rep *Report, format string, args ...any) *Result {
	rep.Outcome = OutcomeInvalid
	rep.ExitCode = ExitInvalid
	rep.Error = fmt.Sprintf(format, args...)
	return &Result{Report: *rep}
}

// execute compiles and runs one job in this process. It never returns an
// error for problems of the guest: those are outcomes in the report.
//
// The guest's host calls go through calls (nil: a guest importing them is
// refused, as a worker without a parent to ask).
func (e *executor) execute(ctx context.Context, j *job, beforeRun func(), calls callTransport) (*Result, error) {
	// A module compiled without cancellation checks is not for a run
	// that needs them (j.Cancel).
	pre, run, r, err := startJob(j, EngineWazero, &e.preloaded, !j.Cancel, func(cm wazero.CompiledModule) {
		if cm != nil {
			cm.Close(ctx)
		}
	})
	if r != nil || err != nil {
		return r, err
	}
	if j.Sealed {
		defer clear(j.Module)
	}
	rep, finish := &run.rep, run.finish

	rt := e.prepared
	e.prepared = nil
	if rt == nil || j.Cancel || j.Sealed {
		if rt != nil {
			rt.Close(ctx)
		}
		ex := e
		if j.Sealed {
			// No native code of a sealed program is ever written.
			ex = &executor{}
		}
		var err error
		if rt, err = ex.newRuntime(ctx, j.Cancel); err != nil {
			return nil, err
		}
	}
	defer rt.Close(context.Background())

	var compiled wazero.CompiledModule
	if pre != nil && pre.code != nil {
		compiled = pre.code
	} else {
		var err error
		if compiled, err = compileGuarded(ctx, rt, j.Module); err != nil {
			return finish(invalid(rep, "invalid module: %v", err)), nil
		}
	}
	if f, ok := compiled.ExportedFunctions()["_start"]; !ok {
		return finish(invalid(rep, "the module exports no _start function (not a WASI command)")), nil
	} else if len(f.ParamTypes()) != 0 || len(f.ResultTypes()) != 0 {
		return finish(invalid(rep, "the module's _start function takes parameters or returns results")), nil
	}
	if err := checkImports(compiled, calls != nil); err != nil {
		return finish(invalid(rep, "%v", err)), nil
	}
	var imports, accel []string
	hostCalls := false
	for _, f := range compiled.ImportedFunctions() {
		mod, name, _ := f.Import()
		switch mod {
		case HostModule:
			hostCalls = true
		case AccelModule:
			accel = append(accel, name)
		default:
			imports = append(imports, name)
		}
	}
	if err := instantiateWASI(ctx, rt, imports); err != nil {
		return nil, fmt.Errorf("isolate: instantiating WASI: %w", err)
	}
	if hostCalls {
		if err := instantiateHostCalls(ctx, rt, j.Calls, calls); err != nil {
			return nil, fmt.Errorf("isolate: instantiating %s: %w", HostModule, err)
		}
	}
	primitives := newAccelCounter(ctx, j)
	if len(accel) > 0 {
		if err := instantiateAccel(ctx, rt, accel, primitives); err != nil {
			return nil, fmt.Errorf("isolate: instantiating %s: %w", AccelModule, err)
		}
	}

	stdout := &limitedBuffer{max: j.MaxStdio}
	stderr := &limitedBuffer{max: j.MaxStdio}
	name := j.Name
	if name == "" {
		name = "program.wasm"
	}
	mc := wazero.NewModuleConfig().
		WithName("").
		WithArgs(append([]string{name}, j.Args...)...).
		WithStdin(bytes.NewReader(nil)).
		WithStdout(stdout).
		WithStderr(stderr)
	for _, kv := range j.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return finish(invalid(rep, "environment entry %q is not KEY=VALUE", kv)), nil
		}
		mc = mc.WithEnv(k, v)
	}
	clk := newJobClocks(j)
	if j.Deterministic {
		mc = mc.WithWalltime(func() (int64, int32) { e := clk.walltime(); return e / 1e9, int32(e % 1e9) }, sys.ClockResolution(1)).
			WithNanotime(clk.nanotime, sys.ClockResolution(1)).
			WithNanosleep(clk.nanosleep).
			WithOsyield(func() {}).
			WithRandSource(clk.random)
	} else {
		// The source must be named: wazero's default (v1.12) is a fixed
		// fake source that gives every run the same "random" bytes.
		mc = mc.WithSysWalltime().WithSysNanotime().WithSysNanosleep().
			WithRandSource(clk.random)
	}
	var gfs *guestFS
	if j.ConformanceRoot != "" {
		mc = mc.WithFSConfig(wazero.NewFSConfig().WithDirMount(j.ConformanceRoot, "/"))
	} else {
		var r *Result
		var err error
		if gfs, r, err = j.guestFS(rep, clk.walltime); r != nil || err != nil {
			if r != nil {
				r = finish(r)
			}
			return r, err
		}
		mc = mc.WithFSConfig(wazero.NewFSConfig().(sysfs.FSConfig).WithSysFSMount(gfs, "/"))
	}

	if beforeRun != nil {
		// The worker locks itself down here: after compiling (which
		// needs the cache files) and before any guest code runs.
		beforeRun()
	}
	alloc := &ceilingAllocator{ceiling: j.Memory}
	runCtx := experimental.WithMemoryAllocator(ctx, alloc)
	if gfs != nil {
		runCtx = context.WithValue(runCtx, guestFSKey{}, gfs)
	}
	mod, err := rt.InstantiateModule(runCtx, compiled, mc)
	if mod != nil {
		_ = mod.Close(context.Background())
	}

	res := &Result{Stdout: stdout.buf.Bytes(), Stderr: stderr.buf.Bytes()}
	rep.StdoutTruncated, rep.StderrTruncated = stdout.truncated, stderr.truncated
	classify(rep, err, alloc.refused.Load(), ctx.Err())
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

// runStart is a run under way: its report, and when it started.
type runStart struct {
	rep   Report
	start time.Time
}

// finish stamps r with the run's wall time.
func (s *runStart) finish(r *Result) *Result {
	r.Report.WallMS = time.Since(s.start).Milliseconds()
	return r
}

// beginRun starts the report of a run of j by engine and loads its module
// (loadModule); a Result or an error ends the run there.
func beginRun(j *job, engine string, start time.Time, preloaded []byte) (*runStart, *Result, error) {
	s := &runStart{rep: newReport(j, engine), start: start}
	r, err := j.loadModule(&s.rep, preloaded)
	if r != nil {
		r = s.finish(r)
	}
	return s, r, err
}

// newReport starts the report of a run of j by engine.
func newReport(j *job, engine string) Report {
	return Report{
		ProgramSHA256: hex.EncodeToString(j.ModuleSHA256[:]),
		Deterministic: j.Deterministic,
		Engine:        engineName(engine),
		Outputs:       []OutputInfo{},
		Protections:   []string{},
	}
}

// loadModule makes j.Module the bytes to run: the sealed module opened
// (the caller zeroes it when the run ends), or the preloaded one when the
// job came without its module. A Result is the guest's problem (invalid,
// or memory), an error the host's.
func (j *job) loadModule(rep *Report, preloaded []byte) (*Result, error) {
	if j.Sealed {
		// Opened here, inside the worker, and compiled without the
		// compilation cache; zeroed when the run ends.
		mod, err := openSealedModule(j)
		if err != nil {
			return invalid(rep, "the sealed module: %v", err), nil
		}
		j.Module = mod
	}
	if j.Module == nil {
		if preloaded == nil {
			return nil, errNotPreloaded
		}
		j.Module = preloaded
	}
	if err := checkMinMemory(j.Module, j.Memory); err != nil {
		rep.Outcome, rep.ExitCode, rep.Error = OutcomeMemory, ExitMemory, err.Error()
		return &Result{Report: *rep}, nil
	}
	return nil, nil
}

// jobClocks are a run's clocks and randomness: fixed and seeded for a
// deterministic run, the system's otherwise.
type jobClocks struct {
	walltime  func() int64
	nanotime  func() int64
	nanosleep func(int64)
	random    io.Reader
}

func newJobClocks(j *job) *jobClocks {
	if j.Deterministic {
		clk := &detClock{}
		epoch := DeterministicEpoch.UnixNano()
		return &jobClocks{walltime: func() int64 { return epoch }, nanotime: clk.nanotime, nanosleep: clk.sleep, random: seededReader(j.Seed)}
	}
	base := time.Now()
	return &jobClocks{
		walltime:  func() int64 { return time.Now().UnixNano() },
		nanotime:  func() int64 { return int64(time.Since(base)) },
		nanosleep: func(ns int64) { time.Sleep(time.Duration(ns)) },
		random:    cryptorand.Reader,
	}
}

// guestFS makes the job's file system: its inputs (sealed ones opened)
// and its output area.
func (j *job) guestFS(rep *Report, now func() int64) (*guestFS, *Result, error) {
	area, err := j.outputArea()
	if err != nil {
		return nil, nil, err
	}
	inputs := make(map[string]*inputSource, len(j.InputNames))
	for i, name := range j.InputNames {
		if inputs[name], err = inputFromFile(j.inputs[i]); err != nil {
			return nil, nil, fmt.Errorf("isolate: input %q: %w", name, err)
		}
		if slices.Contains(j.SealedInputs, name) {
			if err := inputs[name].unseal(j.keys[secretInput(name)]); err != nil {
				return nil, invalid(rep, "input %q: %v", name, err), nil
			}
		}
	}
	return newGuestFS(inputs, area, j.MaxOutput, j.MaxOutputFiles, now), nil, nil
}

// openSealedModule reads the job's sealed module and opens it with its
// key, checking the plaintext's SHA-256 against the job's.
func openSealedModule(j *job) ([]byte, error) {
	key := j.keys[secretModule]
	if j.module == nil || key == nil {
		return nil, errors.New("no sealed module or no key for it")
	}
	var buf bytes.Buffer
	var src io.Reader = j.module // a pipe
	if st, err := j.module.Stat(); err == nil && st.Mode().IsRegular() {
		// From the start, whatever the descriptor's offset (a memfd's
		// is at its end).
		src = io.NewSectionReader(j.module, 0, st.Size())
		buf.Grow(int(min(st.Size(), 1<<30)))
	}
	if _, _, err := sealed.Open(&buf, src, key, &j.ModuleSHA256); err != nil {
		clear(buf.Bytes())
		return nil, err
	}
	return buf.Bytes(), nil
}

// outputArea is the job's output area, sized for its limits.
func (j *job) outputArea() (*outputArea, error) {
	block, blocks, err := areaLayout(j.MaxOutput, j.MaxOutputFiles)
	if err != nil {
		return nil, err
	}
	if j.area == nil {
		return nil, errors.New("isolate: the job has no output area")
	}
	return newOutputArea(fileStore{j.area}, block, blocks), nil
}

// attachOutputs makes r's outputs readers of the job's output area, from
// where the guest left them (layouts, checked already), and fills the
// report's list with sizes and hashes read from the area itself.
func (j *job) attachOutputs(r *Result, layouts []outputLayout) error {
	area, err := j.outputArea()
	if err != nil {
		return err
	}
	r.Outputs = make([]Output, 0, len(layouts))
	r.Report.Outputs = make([]OutputInfo, 0, len(layouts))
	for _, l := range layouts {
		o := Output{Name: l.name, Size: l.size, r: &areaReader{area: area, blocks: l.blocks, size: l.size}}
		h := sha256.New()
		if _, err := io.Copy(h, o.Open()); err != nil {
			return fmt.Errorf("isolate: reading output %q: %w", l.name, err)
		}
		r.Outputs = append(r.Outputs, o)
		r.Report.Outputs = append(r.Report.Outputs, OutputInfo{Name: l.name, Bytes: l.size, SHA256: hex.EncodeToString(h.Sum(nil))})
	}
	return nil
}

// setWarnings derives OutputLimited and Warnings from the limit flags of
// the report, so that their wording is the host's even when the flags came
// from a worker.
func setWarnings(rep *Report, j *job) {
	rep.OutputLimited = len(rep.OutputLimitsHit) > 0
	rep.Warnings = nil
	for _, l := range rep.OutputLimitsHit {
		switch l {
		case LimitMaxOutput:
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("output limit reached: /output/ may hold %d bytes in all (max_output); writes beyond it were refused with ENOSPC", j.MaxOutput))
		case LimitMaxOutputFiles:
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("output limit reached: /output/ may hold %d files (max_output_files); creating more was refused with EDQUOT", j.MaxOutputFiles))
		}
	}
	if rep.StdoutTruncated {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("stdout exceeded %d bytes; the rest was dropped", j.MaxStdio))
	}
	if rep.StderrTruncated {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("stderr exceeded %d bytes; the rest was dropped", j.MaxStdio))
	}
}

// classify turns the error of running _start into an outcome.
func classify(rep *Report, err error, memoryRefused bool, ctxErr error) {
	var exit *sys.ExitError
	switch {
	case err == nil:
		rep.Outcome, rep.ExitCode = OutcomeExited, 0
		return
	case ctxErr != nil && errors.As(err, &exit) &&
		(exit.ExitCode() == sys.ExitCodeDeadlineExceeded || exit.ExitCode() == sys.ExitCodeContextCanceled):
		rep.Outcome, rep.ExitCode, rep.Error = OutcomeTimeout, ExitTimeout, "wall-clock limit reached"
		return
	case errors.Is(err, errRunEnded):
		// A host call was still waiting when the run's deadline passed
		// (directCalls): the guest never got an answer.
		rep.Outcome, rep.ExitCode, rep.Error = OutcomeTimeout, ExitTimeout, "wall-clock limit reached while a host call waited"
		return
	case errors.As(err, &exit):
		code := int(exit.ExitCode())
		if code != 0 && memoryRefused {
			rep.Outcome, rep.ExitCode = OutcomeMemory, ExitMemory
			rep.Error = fmt.Sprintf("the program exited with status %d after a memory growth was refused at the ceiling", code)
			return
		}
		rep.Outcome, rep.ExitCode = OutcomeExited, code
		return
	}
	if memoryRefused {
		rep.Outcome, rep.ExitCode = OutcomeMemory, ExitMemory
		rep.Error = fmt.Sprintf("the program crashed after a memory growth was refused at the ceiling: %v", err)
		return
	}
	rep.Outcome, rep.ExitCode, rep.Error = OutcomeTrap, ExitTrap, trapMessage(err)
}

// trapMessage keeps the useful part of wazero's error: the trap kind and the
// guest stack trace, bounded.
func trapMessage(err error) string {
	msg := err.Error()
	if len(msg) > 4096 {
		msg = msg[:4096] + "…"
	}
	return msg
}

// compileGuarded compiles untrusted bytes; a panic inside the decoder or
// compiler becomes an error instead of taking the process down.
func compileGuarded(ctx context.Context, rt wazero.Runtime, module []byte) (cm wazero.CompiledModule, err error) {
	defer func() {
		if p := recover(); p != nil {
			cm, err = nil, fmt.Errorf("compiler failure: %v", p)
		}
	}()
	return rt.CompileModule(ctx, module)
}

// checkImports refuses modules that import anything but WASI preview-1
// functions and (with hostCalls) the host-call functions with their
// signatures, naming every offending import.
func checkImports(cm wazero.CompiledModule, hostCalls bool) error {
	var bad []string
	for _, f := range cm.ImportedFunctions() {
		mod, name, _ := f.Import()
		switch {
		case mod == wasi_snapshot_preview1.ModuleName && wasiFunctions[name]:
		case mod == HostModule && hostCalls && hostFunctions[name] != 0:
			if !allI32(f.ParamTypes(), hostFunctions[name]) || !allI32(f.ResultTypes(), 1) {
				bad = append(bad, fmt.Sprintf("%s.%s (wrong signature)", mod, name))
			}
		case mod == AccelModule && accelFunctions[name].fn != nil:
			if !allI32(f.ParamTypes(), accelFunctions[name].params) || !allI32(f.ResultTypes(), 1) {
				bad = append(bad, fmt.Sprintf("%s.%s (wrong signature)", mod, name))
			}
		default:
			bad = append(bad, fmt.Sprintf("%s.%s", mod, name))
		}
	}
	for _, m := range cm.ImportedMemories() {
		mod, name, _ := m.Import()
		bad = append(bad, fmt.Sprintf("%s.%s (memory)", mod, name))
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

func allI32(ts []api.ValueType, n int) bool {
	if len(ts) != n {
		return false
	}
	for _, t := range ts {
		if t != api.ValueTypeI32 {
			return false
		}
	}
	return true
}

// wasiFunctions are the WASI preview-1 functions wazero implements.
var wasiFunctions = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range []string{
		"args_get", "args_sizes_get", "environ_get", "environ_sizes_get",
		"clock_res_get", "clock_time_get",
		"fd_advise", "fd_allocate", "fd_close", "fd_datasync", "fd_fdstat_get",
		"fd_fdstat_set_flags", "fd_fdstat_set_rights", "fd_filestat_get",
		"fd_filestat_set_size", "fd_filestat_set_times", "fd_pread",
		"fd_prestat_get", "fd_prestat_dir_name", "fd_pwrite", "fd_read",
		"fd_readdir", "fd_renumber", "fd_seek", "fd_sync", "fd_tell", "fd_write",
		"path_create_directory", "path_filestat_get", "path_filestat_set_times",
		"path_link", "path_open", "path_readlink", "path_remove_directory",
		"path_rename", "path_symlink", "path_unlink_file",
		"poll_oneoff", "proc_exit", "proc_raise", "sched_yield", "random_get",
		"sock_accept", "sock_recv", "sock_send", "sock_shutdown",
	} {
		m[n] = true
	}
	return m
}()
