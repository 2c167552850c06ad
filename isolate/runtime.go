package isolate

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"golang.org/x/sys/unix"

	"github.com/cloisterhq/cloister/sealed"
)

// Options configures a Runtime.
type Options struct {
	// DataDir holds the compilation cache (DataDir/wazero-cache). Empty
	// means no disk cache: every run compiles from scratch.
	DataDir string
	// InProcess runs guests in this process, without the jailed worker. It
	// exists for benchmarks and comparison: the report then lists no
	// protections, and the deadline is enforced by wazero's cancellation
	// (which slows loops) unless InProcessNoCancel is set.
	InProcess bool
	// InProcessNoCancel, with InProcess, runs without any deadline so that
	// loop-heavy benchmarks are not slowed by wazero's cancellation checks.
	// A guest that never ends then never returns.
	InProcessNoCancel bool
	// WarmWorkers is the number of pre-started, already jailed workers kept
	// waiting for a job (0: each run starts its own worker, cold). A worker
	// serves one job and exits; the pool is refilled in the background.
	WarmWorkers int
	// CacheKey authenticates the compilation cache's entries (at least 32
	// bytes; a node derives it from its own key). Nil: a random key kept in
	// DataDir/isolate-cache/key.
	CacheKey []byte
	// MaxConcurrentCalls bounds the host-call handlers running at once
	// across all runs (0: DefaultMaxConcurrentCalls).
	MaxConcurrentCalls int
	// WorkerBinary is the cloister-isolate executable workers are started
	// from. Empty: the one next to the running executable if there is a
	// compatible one, else the running binary re-executed (which must then
	// call IsWorker/WorkerMain first thing); WorkerBinarySelf: always the
	// running binary. A path that is not a cloister-isolate built from the
	// same module versions makes New fail.
	WorkerBinary string
	// Engine is the WebAssembly engine guests run with: EngineWazero
	// (empty: DefaultEngine) or EngineWasmtime. Jailed runs of wasmtime
	// need its worker binary (cmd/cloister-isolate-wasmtime, found next
	// to the running executable like cloister-isolate, or named by
	// WorkerBinary); in-process runs need a binary built with the
	// cloister_wasmtime tag.
	Engine string
	// EngineWorkerBinaries names the worker binary of another engine than
	// Engine, for runs that ask for it (Config.Engine); an engine not
	// listed uses its binary next to the running executable.
	EngineWorkerBinaries map[string]string
}

// ErrClosed is returned by Run once the Runtime is closed, including for a
// run that was in flight when Close killed its worker.
var ErrClosed = errors.New("isolate: the runtime is closed")

// Runtime runs WASI preview-1 programs. It is safe for concurrent use.
type Runtime struct {
	opts     Options
	cacheDir string
	cache    wazero.CompilationCache // parent side: validates and fills the cache
	local    jobExecutor
	engine   string
	jail     *jailer // nil when InProcess
	bin      *workerBinary
	// callSlots holds a token per host-call handler running.
	callSlots chan struct{}

	closeOnce sync.Once
	closed    atomic.Bool

	// others are the runtimes of other engines that runs naming them
	// (Config.Engine) go to, made on first use; an engine that could not
	// be made keeps its error (a worker binary installed later needs a
	// new Runtime).
	othersMu sync.Mutex
	others   map[string]otherEngine
}

type otherEngine struct {
	rt  *Runtime
	err error
}

// ForEngine returns the runtime that runs engine's jobs for r: r itself
// for its own engine (or ""), else one with r's options and that engine,
// made on first use and closed with r. The error, when that engine cannot
// run here, wraps ErrEngineUnavailable and says why.
func (r *Runtime) ForEngine(ctx context.Context, engine string) (*Runtime, error) {
	if engine == "" || engine == r.opts.Engine {
		return r, nil
	}
	if err := knownEngine(engine); err != nil {
		return nil, engineUnavailable(err)
	}
	r.othersMu.Lock()
	defer r.othersMu.Unlock()
	if r.closed.Load() {
		return nil, ErrClosed
	}
	o, ok := r.others[engine]
	if !ok {
		opts := r.opts
		opts.Engine = engine
		// A worker binary named for r's engine is not this engine's:
		// that one is named apart, or found next to the running
		// executable.
		opts.WorkerBinary = r.opts.EngineWorkerBinaries[engine]
		o.rt, o.err = New(ctx, opts)
		if o.err != nil {
			o.err = engineUnavailable(fmt.Errorf("isolate: this runtime cannot run the %s engine: %w", engine, o.err))
		}
		if r.others == nil {
			r.others = map[string]otherEngine{}
		}
		r.others[engine] = o
	}
	return o.rt, o.err
}

// New prepares a runtime. With a DataDir it creates DataDir/wazero-cache.
// Unless opts.InProcess is set it also prepares the jail (cgroup, warm pool).
func New(ctx context.Context, opts Options) (*Runtime, error) {
	if opts.Engine == "" {
		opts.Engine = DefaultEngine
	}
	if err := knownEngine(opts.Engine); err != nil {
		return nil, err
	}
	r := &Runtime{opts: opts, engine: opts.Engine, callSlots: make(chan struct{}, orDefault(opts.MaxConcurrentCalls, DefaultMaxConcurrentCalls))}
	if opts.DataDir != "" {
		r.cacheDir = filepath.Join(opts.DataDir, "wazero-cache")
		// wazero's cache key does not say whether the code was compiled
		// with cancellation checks (WithCloseOnContextDone), so in-process
		// runs that need them keep their own cache: code compiled without
		// them must never be loaded by a run that relies on them.
		dir := r.cacheDir
		if opts.InProcess && !opts.InProcessNoCancel {
			dir = filepath.Join(opts.DataDir, "wazero-cache-cancel")
		}
		if err := os.MkdirAll(r.cacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("isolate: creating the compilation cache directory: %w", err)
		}
		// Private, even if it existed: workers see it only while they are
		// its owner (a worker mounts no cache that others could open).
		if err := os.Chmod(r.cacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("isolate: making the compilation cache directory private: %w", err)
		}
		c, err := wazero.NewCompilationCacheWithDir(dir)
		if err != nil {
			return nil, fmt.Errorf("isolate: opening the compilation cache %s: %w", dir, err)
		}
		r.cache = c
	}
	if opts.Engine == EngineWazero {
		r.local = &executor{cache: r.cache}
	} else if opts.InProcess {
		// Other engines keep no cache for in-process runs.
		var err error
		if r.local, err = newEngineExecutor(opts.Engine, ""); err != nil {
			r.Close()
			return nil, err
		}
	}
	if !opts.InProcess {
		bin, err := resolveWorkerBinary(opts.WorkerBinary, opts.Engine)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.bin = bin
		var entries *entryCache
		if opts.DataDir != "" {
			if entries, err = openEntryCache(opts.DataDir, opts.CacheKey); err != nil {
				r.Close()
				return nil, err
			}
		}
		j, err := newJailer(ctx, entries, opts.WarmWorkers, bin, opts.Engine)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.jail = j
	}
	return r, nil
}

// Close kills every worker at once — idle ones in the warm pool, ones
// starting up, and ones running a job, whose Run returns ErrClosed — waits
// for the kernel to reap them (milliseconds; at most a few seconds, then
// the rest is released in the background and the error says so), and
// releases the compilation cache. Later calls to Run return ErrClosed.
func (r *Runtime) Close() error {
	var err error
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		var othersErr error
		r.othersMu.Lock()
		for _, o := range r.others {
			if o.rt != nil {
				othersErr = errors.Join(othersErr, o.rt.Close())
			}
		}
		r.othersMu.Unlock()
		defer func() { err = errors.Join(err, othersErr) }()
		// The worker binary and the shared network namespace are held by
		// descriptor; a worker still starting would exec or join a reused
		// descriptor number if they were closed under it, so they stay
		// open when Close gave up waiting for the workers.
		release := true
		if r.jail != nil {
			err = r.jail.close()
			release = err == nil
			if release {
				r.jail.netns.close()
				if r.jail.cache != nil {
					r.jail.cache.close()
				}
			}
		}
		if r.cache != nil {
			err = errors.Join(err, r.cache.Close(context.Background()))
		}
		if r.bin != nil && release {
			r.bin.close()
		}
	})
	return err
}

// WorkerBinaryRefused is the reason a cloister-isolate lying next to the
// running executable was not used (another build, a file others could
// write …), or "" (none there, or it is used, or WorkerBinary was given).
func (r *Runtime) WorkerBinaryRefused() string {
	if r.bin == nil {
		return ""
	}
	return r.bin.refused
}

// WorkerBinary says what workers are started from — the path of the
// cloister-isolate binary, or "this binary re-executed" — and, when that
// is not the lean worker binary, why (empty otherwise). In-process
// runtimes return "in process".
func (r *Runtime) WorkerBinary() (name, note string) {
	if r.bin == nil {
		return "in process", ""
	}
	return r.bin.name, r.bin.note
}

// Engine is the engine this runtime runs guests with, and its version
// when it is linked into this binary.
func (r *Runtime) Engine() string { return r.engine }

// Run executes one program and reports how it ended. The error is only for
// failures of the host (a worker that cannot be started, a broken pipe);
// problems of the guest — an invalid module, unknown imports, bad input
// names — are a Result with Report.Outcome == OutcomeInvalid and a nil error.
// The caller closes the Result to release its outputs.
func (r *Runtime) Run(ctx context.Context, cfg *Config) (*Result, error) {
	if r.closed.Load() {
		return nil, ErrClosed
	}
	if cfg.Engine != "" && cfg.Engine != r.opts.Engine {
		o, err := r.ForEngine(ctx, cfg.Engine)
		if err != nil {
			return nil, err
		}
		return o.Run(ctx, cfg)
	}
	j, rep, err := resolve(cfg)
	if err != nil {
		return nil, err
	}
	if rep != nil {
		return &Result{Report: *rep}, nil
	}
	if j.ConformanceRoot == "" {
		files, rep, err := openJobFiles(j, cfg, r.opts.DataDir)
		if err != nil {
			return nil, err
		}
		if rep != nil {
			return &Result{Report: *rep}, nil
		}
		defer files.close()
	}
	var res *Result
	calls := r.dispatcher(ctx, cfg, j)
	if r.opts.InProcess || j.ConformanceRoot != "" {
		res, err = r.runLocal(ctx, j, calls)
	} else {
		res, err = r.jail.run(ctx, j, calls)
	}
	if err != nil {
		return nil, err
	}
	if len(res.layouts) > 0 {
		if err := j.attachOutputs(res, res.layouts); err != nil {
			return nil, err
		}
		res.layouts = nil
		// The area now belongs to the result.
		res.area, j.area = j.area, nil
	}
	if res.Report.Outputs == nil {
		res.Report.Outputs = []OutputInfo{}
	}
	return res, nil
}

// jobFiles are the parent's descriptors of a job, closed when Run returns
// (the output area only if no Result took it).
type jobFiles struct {
	j       *job
	writers []*os.File // write ends of stream inputs' pipes
}

func (f *jobFiles) close() {
	for _, w := range f.writers {
		w.Close() // ends a copy the guest did not read to the end
	}
	for _, in := range f.j.inputs {
		in.Close()
	}
	if f.j.module != nil {
		f.j.module.Close()
	}
	if f.j.area != nil {
		f.j.area.Close()
	}
}

// openJobFiles makes the output area (in dataDir, or in memory) and opens
// every input, and a sealed module, for reading: a Path read-only, Data as
// a sealed memfd, a Reader as a pipe fed in the background. A Path that
// cannot be opened makes a Report (the guest's side: nothing runs).
func openJobFiles(j *job, cfg *Config, dataDir string) (*jobFiles, *Report, error) {
	files := &jobFiles{j: j}
	area, err := createAreaFile(dataDir)
	if err != nil {
		files.close()
		return nil, nil, err
	}
	j.area = area
	open := func(what string, in Input) (*os.File, *Report, error) {
		f, problem, err := files.open(in)
		if err != nil {
			files.close()
			return nil, nil, fmt.Errorf("isolate: %s: %w", what, err)
		}
		if problem != "" {
			files.close()
			return nil, &Report{Outcome: OutcomeInvalid, ExitCode: ExitInvalid, Error: what + ": " + problem,
				Outputs: []OutputInfo{}, Protections: []string{}, Deterministic: cfg.Deterministic}, nil
		}
		return f, nil, nil
	}
	if cfg.SealedModule != nil {
		f, rep, err := open("the sealed module", *cfg.SealedModule)
		if f == nil {
			return nil, rep, err
		}
		j.module = f
	}
	for _, in := range cfg.Inputs {
		f, rep, err := open(fmt.Sprintf("input %q", in.Name), in)
		if f == nil {
			return nil, rep, err
		}
		j.inputs = append(j.inputs, f)
	}
	return files, nil, nil
}

// open opens one input's bytes: the descriptor, or a problem of the
// guest's side (a path that does not open), or a host error.
func (files *jobFiles) open(in Input) (*os.File, string, error) {
	switch {
	case in.Path != "":
		f, err := os.Open(in.Path)
		if err != nil {
			return nil, err.Error(), nil
		}
		if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
			f.Close()
			return nil, in.Path + " is not a regular file", nil
		}
		return f, "", nil
	case in.Reader != nil:
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, "", err
		}
		files.writers = append(files.writers, pw)
		go func(src io.Reader) {
			_, _ = io.Copy(pw, src)
			pw.Close()
		}(in.Reader)
		return pr, "", nil
	}
	f, err := sealedMemfd(in.Name, in.Data)
	return f, "", err
}

// sealedMemfd puts data in a memfd that can no longer be written, grown or
// shrunk (F_SEAL_*), so that the descriptor handed to the worker reads
// exactly data.
func sealedMemfd(name string, data []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("cloister-input", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "input "+name)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL); err != nil {
		f.Close()
		return nil, fmt.Errorf("sealing the memfd: %w", err)
	}
	return f, nil
}

// dispatcher answers the job's host calls; its deadline is set when the
// guest starts (callDispatcher.start).
func (r *Runtime) dispatcher(ctx context.Context, cfg *Config, j *job) *callDispatcher {
	return newCallDispatcher(ctx, cfg, j.Calls, r.callSlots)
}

func (r *Runtime) runLocal(ctx context.Context, j *job, calls *callDispatcher) (*Result, error) {
	if !r.opts.InProcessNoCancel {
		j.Cancel = true
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, j.Timeout)
		defer cancel()
	}
	ex := r.local
	if !r.opts.InProcess {
		// A conformance run on a jailed runtime: its cache holds code
		// without cancellation checks, so compile afresh.
		var err error
		if ex, err = newEngineExecutor(r.engine, ""); err != nil {
			return nil, err
		}
	}
	res, err := ex.execute(ctx, j, func() { calls.start(j.Timeout) }, directCalls{calls})
	calls.stop()
	if err != nil {
		return nil, err
	}
	res.Report.HostCalls = calls.answered.Load()
	// The guest wrote only what the area allowed; its layouts are the
	// file system's own.
	res.Report.Missing = map[string]string{"worker": "in-process run (no jailed worker): nothing but the Wasm sandbox separates the guest from the host process"}
	return res, nil
}

// ValidateInputName checks that name can appear as /input/NAME: a plain file
// name, not empty, without "/" or NUL, and not "." or "..".
func ValidateInputName(name string) error {
	switch {
	case name == "":
		return errors.New("input name is empty")
	case name == "." || name == "..":
		return fmt.Errorf("input name %q is not a file name", name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("input name %q must be a plain file name (no '/')", name)
	case len(name) > 255:
		return fmt.Errorf("input name %q is longer than 255 bytes", name[:32]+"…")
	}
	return nil
}

// resolve applies defaults and checks the inputs' names. A returned Report
// means the configuration is invalid for reasons of the guest's side
// (nothing runs).
func resolve(cfg *Config) (*job, *Report, error) {
	if cfg == nil {
		return nil, nil, errors.New("isolate: nil Config")
	}
	j := &job{
		Module: cfg.Module, ModuleSHA256: sha256.Sum256(cfg.Module),
		Name: cfg.Name, Args: cfg.Args, Env: cfg.Env,
		Memory: cfg.Memory, Timeout: cfg.Timeout, MaxOutput: cfg.MaxOutput,
		MaxOutputFiles: cfg.MaxOutputFiles, MaxStdio: cfg.MaxStdio,
		Deterministic: cfg.Deterministic, Seed: cfg.Seed,
		ConformanceRoot: cfg.ConformanceRoot,
	}
	if j.Memory == 0 {
		j.Memory = DefaultMemory
	}
	j.Memory -= j.Memory % wasmPage
	if j.Timeout <= 0 {
		j.Timeout = DefaultTimeout
	}
	if j.MaxOutput <= 0 {
		j.MaxOutput = DefaultMaxOutput
	}
	if j.MaxOutputFiles <= 0 {
		j.MaxOutputFiles = DefaultMaxOutputFiles
	}
	if j.MaxStdio <= 0 {
		j.MaxStdio = DefaultMaxStdio
	}
	var err error
	if j.Calls, err = resolveCalls(cfg); err != nil {
		return nil, nil, err
	}
	if cfg.SealedModule != nil {
		if cfg.ModuleKey == nil || len(cfg.Module) != 0 {
			return nil, nil, errors.New("isolate: a sealed module needs ModuleKey, and no Module")
		}
		j.Sealed, j.ModuleSHA256 = true, cfg.ModuleSHA256
		j.keys = map[string]*sealed.Key{secretModule: cfg.ModuleKey}
	}
	bad := func(format string, args ...any) (*job, *Report, error) {
		return nil, &Report{Outcome: OutcomeInvalid, ExitCode: ExitInvalid, Error: fmt.Sprintf(format, args...),
			Outputs: []OutputInfo{}, Protections: []string{}, Deterministic: cfg.Deterministic}, nil
	}
	if len(j.Module) == 0 && !j.Sealed {
		return bad("the module is empty")
	}
	for _, kv := range j.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.ContainsRune(kv, 0) {
			return bad("environment entry %q is not KEY=VALUE", kv)
		}
	}
	for _, a := range append([]string{j.Name}, j.Args...) {
		if strings.ContainsRune(a, 0) {
			return bad("argument %q contains a NUL byte", a)
		}
	}
	if len(cfg.Inputs) >= maxJobFiles {
		return bad("%d inputs: at most %d", len(cfg.Inputs), maxJobFiles-1)
	}
	seen := map[string]bool{}
	for _, in := range cfg.Inputs {
		if err := validateInputPath(in.Name); err != nil {
			return bad("%v", err)
		}
		if seen[in.Name] {
			return bad("input %q is given twice", in.Name)
		}
		seen[in.Name] = true
		set := 0
		for _, b := range []bool{in.Data != nil, in.Path != "", in.Reader != nil} {
			if b {
				set++
			}
		}
		if set > 1 {
			return bad("input %q has more than one of Data, Path and Reader", in.Name)
		}
		j.InputNames = append(j.InputNames, in.Name)
		if in.Key != nil {
			j.SealedInputs = append(j.SealedInputs, in.Name)
			if j.keys == nil {
				j.keys = map[string]*sealed.Key{}
			}
			j.keys[secretInput(in.Name)] = in.Key
		}
	}
	if _, err := inputDirs(j.InputNames); err != nil {
		return bad("%v", err)
	}
	return j, nil, nil
}
