package isolate

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"strings"
	"sync"

	"github.com/tetratelabs/wazero"
)

// Engines: the WebAssembly engine a Runtime runs guests with
// (Options.Engine). wazero, pure Go, is the default and is in every
// binary; wasmtime (Cranelift, through cgo) lives in its own worker binary,
// cmd/cloister-isolate-wasmtime, so that the node and the lean worker stay
// free of cgo (decision 0140).
const (
	EngineWazero   = "wazero"
	EngineWasmtime = "wasmtime"
)

// DefaultEngine is the engine of a Runtime whose Options.Engine is empty.
const DefaultEngine = EngineWazero

// workerEngineEnv tells a worker which engine the parent expects it to run.
const workerEngineEnv = "CLOISTER_ISOLATE_ENGINE"

// jobExecutor runs jobs in the current process with one engine.
type jobExecutor interface {
	// prepare does what does not depend on the job (a warm worker, while
	// it waits).
	prepare(ctx context.Context)
	// preload compiles module ahead of the job (no guest code runs),
	// for a deterministic job with det.
	preload(ctx context.Context, module []byte, det bool)
	// holds reports whether the module with this SHA-256 is preloaded.
	holds(sum [32]byte) bool
	// execute runs one job (exec.go describes the contract).
	execute(ctx context.Context, j *job, beforeRun func(), calls callTransport) (*Result, error)
}

// engineFactory makes an executor whose compiled modules are cached in
// cacheDir ("" for none).
type engineFactory struct {
	version string
	make    func(cacheDir string) (jobExecutor, error)
}

var (
	enginesMu sync.Mutex
	engines   = map[string]engineFactory{
		EngineWazero: {version: moduleVersion("github.com/tetratelabs/wazero"), make: func(cacheDir string) (jobExecutor, error) {
			e := &executor{}
			if cacheDir != "" {
				c, err := wazero.NewCompilationCacheWithDir(cacheDir)
				if err != nil {
					return nil, err
				}
				e.cache = c
			}
			return e, nil
		}},
	}
)

// ErrEngineUnavailable is what New's error wraps (errors.Is) when the
// engine asked for cannot run on this machine: its worker binary is
// missing or refused. Nothing else about the runtime (its cache, say) is
// at fault, so trying again without it would not help.
var ErrEngineUnavailable = errors.New("isolate: engine unavailable")

type engineUnavailableError struct{ err error }

func (e *engineUnavailableError) Error() string        { return e.err.Error() }
func (e *engineUnavailableError) Unwrap() error        { return e.err }
func (e *engineUnavailableError) Is(target error) bool { return target == ErrEngineUnavailable }

func engineUnavailable(err error) error { return &engineUnavailableError{err} }

// engineAddressSpace is the address space an engine reserves beyond the
// worker's usual overhead (workerAddressSpaceOverhead): the worker's
// RLIMIT_AS makes room for it.
var engineAddressSpace = map[string]uint64{}

// registerEngine adds an engine linked into this binary (build-tagged
// files do it in init).
func registerEngine(name string, f engineFactory) {
	enginesMu.Lock()
	defer enginesMu.Unlock()
	engines[name] = f
}

func lookupEngine(name string) (engineFactory, bool) {
	enginesMu.Lock()
	defer enginesMu.Unlock()
	f, ok := engines[name]
	return f, ok
}

// Engines lists the engines linked into this binary (a Runtime can also
// run another through that engine's worker binary).
func Engines() []string {
	enginesMu.Lock()
	defer enginesMu.Unlock()
	var out []string
	for n := range engines {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// knownEngine checks an Options.Engine value.
func knownEngine(name string) error {
	switch name {
	case EngineWazero, EngineWasmtime:
		return nil
	}
	return fmt.Errorf("isolate: unknown engine %q (engines: %s, %s)", name, EngineWazero, EngineWasmtime)
}

// newEngineExecutor makes an in-process executor for engine.
func newEngineExecutor(engine, cacheDir string) (jobExecutor, error) {
	f, ok := lookupEngine(engine)
	if !ok {
		return nil, engineUnavailable(fmt.Errorf("isolate: the %s engine is not linked into this binary (it runs in %s)", engine, engineWorkerName(engine)))
	}
	return f.make(cacheDir)
}

// engineName is what the report calls an engine: its name and version.
func engineName(engine string) string {
	if f, ok := lookupEngine(engine); ok && f.version != "" {
		return engine + " " + strings.TrimPrefix(f.version, "v")
	}
	return engine
}

// engineWorkerName is the worker binary that runs engine.
func engineWorkerName(engine string) string {
	if engine == EngineWasmtime {
		return WorkerBinaryName + "-" + EngineWasmtime
	}
	return WorkerBinaryName
}

// moduleVersion is the version of a module linked into this binary
// ("" in test binaries, which carry no module list).
func moduleVersion(path string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	if v := depVersion(info, path); v != "(none)" {
		return v
	}
	return ""
}
