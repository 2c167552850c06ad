package isolate

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/cloisterhq/cloister/sealed"
)

// Defaults used when a Config field is zero.
const (
	DefaultMemory         = 256 << 20 // guest linear memory ceiling
	DefaultTimeout        = 30 * time.Second
	DefaultMaxOutput      = 64 << 20 // total bytes under /output/
	DefaultMaxOutputFiles = 256      // files under /output/
	DefaultMaxStdio       = 16 << 20 // bytes kept per stream (stdout, stderr)
)

// CompileTimeout bounds the compilation of a module in the jailed worker.
// Config.Timeout starts only once the module is compiled and the worker is
// locked down, so a first-time compilation (seconds for a large module) does
// not count against the program. It is 2 minutes, and 10 in a race-detector
// build, whose instrumented compiler runs about ten times slower (a 3 MB Go
// guest took over 2 minutes in a loaded CI machine's -race tests).
var CompileTimeout = 2 * time.Minute * raceSlowdown

// Input is one file the guest sees read-only at /input/Name. A Name of the
// form DIR/FILE puts the file in the read-only directory /input/DIR, which
// holds exactly the inputs named DIR/… (vfs_dir.go). Exactly one of
// Data, Path and Reader is set. The guest reads it through a descriptor
// the host side opens and hands to the jailed worker (which opens nothing
// itself), so an input is never copied into the worker's memory:
//
//   - Path: a regular file, opened read-only; the guest reads with pread
//     semantics (seek anywhere).
//   - Data: bytes in memory, put in a sealed memfd (read-only).
//   - Reader: a stream, fed to the guest through a pipe while it runs; the
//     guest reads it in order (seeking fails), and its size shows as 0.
//     It is read until EOF, an error, or the end of the run, whichever
//     comes first; a guest that never reads it does not hold up the run.
//
// With Key set, those bytes are a sealed file (package sealed) and the
// guest reads its plaintext: decrypted inside the worker as the guest
// reads it (in place for a file, in order for a stream), every chunk
// authenticated before any of its bytes reach the guest. A chunk that
// does not authenticate fails the read (EIO). The key travels in the
// secret frame and is zeroed after the run.
type Input struct {
	Name   string
	Data   []byte
	Path   string
	Reader io.Reader
	Key    *sealed.Key
}

// Config describes one run of a WASI preview-1 module.
type Config struct {
	Module []byte // the .wasm bytes

	// SealedModule, instead of Module, gives the program as a sealed file
	// (package sealed: its Path, Data or Reader; Name and Key unused),
	// opened with ModuleKey inside the jailed worker, whose plaintext must
	// have the SHA-256 ModuleSHA256. The host side never holds the
	// plaintext (in a jailed run); the worker compiles it without the
	// compilation cache, is never preloaded with it for another job, and
	// zeroes it and the key when the run ends (decision 0072).
	SealedModule *Input
	ModuleKey    *sealed.Key
	ModuleSHA256 [32]byte

	Name   string   // argv[0] as the guest sees it; default "program.wasm"
	Args   []string // argv[1:]
	Env    []string // "KEY=VALUE"; nothing from the host environment leaks in
	Inputs []Input

	Memory         uint64        // guest linear memory ceiling in bytes
	Timeout        time.Duration // wall clock, enforced by SIGKILL of the worker
	MaxOutput      int64         // total bytes the guest may write under /output/
	MaxOutputFiles int           // files the guest may create under /output/
	MaxStdio       int64         // bytes kept per stdout/stderr stream; the rest is dropped and flagged

	// Deterministic fixes the wall clock, makes the monotonic clock advance
	// by a fixed step per reading, and derives randomness from Seed.
	Deterministic bool
	Seed          [32]byte

	// HostCalls are the calls the guest may make while it runs, by name
	// (hostcall.go); nil: none. CallRate bounds how many are answered a
	// second (0: DefaultCallRate); a guest calling faster waits.
	HostCalls map[string]HostCall
	CallRate  float64

	// Engine, when set, is the engine this run must use (a policy may
	// name one): a Runtime of another engine runs it through a runtime
	// of that engine it makes on first use, with the same options, or
	// refuses with an error wrapping ErrEngineUnavailable. Empty: the
	// Runtime's own.
	Engine string

	// ConformanceRoot, when set, replaces the /input + /output view with a
	// host directory preopened as "/". It exists for the WASI conformance
	// tests only, is not reachable from the CLI, and forces an in-process
	// run (the jailed worker never opens host paths).
	ConformanceRoot string
}

// Outcome says how a run ended.
type Outcome string

const (
	OutcomeExited  Outcome = "exited"  // the program exited by itself (or _start returned)
	OutcomeTimeout Outcome = "timeout" // killed at the wall-clock limit
	OutcomeMemory  Outcome = "memory"  // died after a memory growth was refused at the ceiling
	OutcomeTrap    Outcome = "trap"    // crash: unreachable, out-of-bounds, stack overflow
	OutcomeInvalid Outcome = "invalid" // nothing ran: bad module, unknown imports, bad inputs
)

// Exit statuses `cloister run` uses for outcomes other than OutcomeExited.
const (
	ExitTimeout = 124
	ExitMemory  = 125
	ExitTrap    = 126
	ExitInvalid = 2
)

// OutputInfo describes one file the guest left under /output/.
type OutputInfo struct {
	Name   string `json:"name"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// Report is the JSON run report (`cloister run --report`).
type Report struct {
	Outcome  Outcome `json:"outcome"`
	ExitCode int     `json:"exit_code"`
	WallMS   int64   `json:"wall_ms"`
	// CPUMS is the CPU time (user and system, all threads) the worker
	// process used from the job's dispatch to its result, read by the
	// host (the worker's cgroup, /proc, or the rusage of its reaping);
	// nil when not measured — runs without a worker process.
	CPUMS         *int64       `json:"cpu_ms,omitempty"`
	ProgramSHA256 string       `json:"program_sha256"`
	Outputs       []OutputInfo `json:"outputs"`
	// Protections lists the isolation mechanisms that were in force for
	// this run: netns, mountns, pidns, seccomp, no_new_privs, rlimit,
	// cgroup, worker (separate process).
	Protections []string `json:"protections"`
	// Missing maps each mechanism that could not be applied to the reason.
	Missing map[string]string `json:"missing_protections,omitempty"`
	// Error explains outcomes other than exited (the trap message, the
	// invalid-module reason, which limit was hit).
	Error           string `json:"error,omitempty"`
	StdoutTruncated bool   `json:"stdout_truncated,omitempty"`
	StderrTruncated bool   `json:"stderr_truncated,omitempty"`
	Deterministic   bool   `json:"deterministic"`
	// OutputLimited says a write or file creation under /output/ was
	// refused because MaxOutput or MaxOutputFiles was reached.
	OutputLimited bool `json:"output_limited,omitempty"`
	// OutputLimitsHit names each limit that refused something:
	// LimitMaxOutput (the guest was told ENOSPC) and LimitMaxOutputFiles
	// (EDQUOT), in that order.
	OutputLimitsHit []string `json:"output_limits_hit,omitempty"`
	// Warnings say, in words, what a run that otherwise ended normally
	// lost to a limit: refused output writes, truncated stdout or stderr.
	Warnings []string `json:"warnings,omitempty"`
	// HostCalls counts the host calls the host answered (a call refused
	// before its handler ran is not counted).
	HostCalls int64 `json:"host_calls,omitempty"`
	// HostPrimitives counts the calls to the host-accelerated primitives
	// (AccelModule: SHA-256, AES-GCM) the program made.
	HostPrimitives int64 `json:"host_primitives,omitempty"`
	// Engine names the WebAssembly engine that ran the program and its
	// version ("wazero 1.12.0", "wasmtime 39.0.1").
	Engine string `json:"engine,omitempty"`
}

// Names of the output limits in Report.OutputLimitsHit.
const (
	LimitMaxOutput      = "max_output"
	LimitMaxOutputFiles = "max_output_files"
)

// Output is one file the guest left under /output/. Its bytes stay in the
// run's output area — a file on the node's disk, or in memory without a
// DataDir — until read, and can be read until Result.Close.
type Output struct {
	Name string
	Size int64
	r    io.ReaderAt
}

// Open returns a reader of the output's bytes; readers are independent.
func (o *Output) Open() *io.SectionReader { return io.NewSectionReader(o.r, 0, o.Size) }

// Bytes reads the whole output into memory.
func (o *Output) Bytes() ([]byte, error) {
	b := make([]byte, o.Size)
	if _, err := io.ReadFull(o.Open(), b); err != nil {
		return nil, fmt.Errorf("isolate: reading output %q: %w", o.Name, err)
	}
	return b, nil
}

// Result is everything a run produced. Close releases its outputs.
type Result struct {
	Report  Report
	Stdout  []byte
	Stderr  []byte
	Outputs []Output

	area    *os.File          // the output area, read by Outputs
	layouts []outputLayout    // where the guest left its outputs in it
	probes  map[string]string // worker self-test (tests only)
}

// Close releases the output area; the outputs cannot be read afterwards.
func (r *Result) Close() error {
	if r == nil || r.area == nil {
		return nil
	}
	err := r.area.Close()
	r.area = nil
	return err
}
