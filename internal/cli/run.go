package cli

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/internal/bytesize"
	"github.com/cloisterhq/cloister/isolate"
)

type runFlags struct {
	inputs        []string
	outputDir     string
	memory        string
	timeout       time.Duration
	maxOutput     string
	deterministic bool
	seed          string
	env           []string
	report        string
	engine        string
}

func newRunCmd() *cobra.Command {
	f := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run [flags] PROGRAM.wasm [-- ARG...]",
		Short: "Run a WebAssembly (WASI preview 1) program in a jailed isolate",
		Long: `run executes PROGRAM.wasm in a jailed worker process: its own empty network,
mount, PID, IPC and UTS namespaces, rlimits, a seccomp filter, no_new_privs,
an unprivileged uid and a cgroup where available; it is killed at the
deadline. The program sees only /input/NAME (read-only, one per --input) and
/output/ (writable, bounded); files it leaves under /output/ are saved to
--output-dir. Its stdout and stderr are passed through (bounded to 16 MiB
each). Arguments after "--" are passed to the program.

If some protection cannot be applied on this machine (no namespaces, no
cgroup v2), the run still happens, a one-line warning goes to stderr, and
the report's missing_protections says exactly what and why.

Exit status: the program's own when it exits by itself (0 when _start
returns); 124 time limit; 125 memory limit; 126 trap (crash, unreachable,
stack overflow); 2 bad usage or invalid module/inputs (nothing ran);
1 the runtime itself failed.

--engine picks the WebAssembly engine: wazero (the default, pure Go, in
every build) or wasmtime (Cranelift; several times faster on compute-heavy
programs; its worker, cloister-isolate-wasmtime, must lie next to the
cloister binary: go build -tags cloister_wasmtime ./cmd/cloister-isolate-wasmtime).
The report's "engine" names the one that ran.

The compilation cache lives under the data directory: $CLOISTER_DATA, else
$XDG_DATA_HOME/cloister, else ~/.local/share/cloister.`,
		Example: `  cloister run examples/wordcount/wordcount.wasm --input text=README.md
  cloister run prog.wasm --memory 64MiB --timeout 5s --output-dir out/ -- --verbose
  cloister run prog.wasm --deterministic --seed $(head -c32 /dev/urandom | xxd -p -c64) --report -
  cloister run prog.wasm --engine wasmtime --report -`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runRun(cmd, f, args) },
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.inputs, "input", nil, "NAME=PATH: the file at PATH is visible read-only at /input/NAME (repeatable)")
	fl.StringVar(&f.outputDir, "output-dir", "", "save the files the program wrote under /output/ here (created if missing)")
	fl.StringVar(&f.memory, "memory", "256MiB", "guest memory ceiling, e.g. 64MiB")
	fl.DurationVar(&f.timeout, "timeout", isolate.DefaultTimeout, "wall-clock limit, e.g. 5s")
	fl.StringVar(&f.maxOutput, "max-output", "64MiB", "total bytes the program may write under /output/")
	fl.BoolVar(&f.deterministic, "deterministic", false, "fixed clocks and seeded randomness")
	fl.StringVar(&f.seed, "seed", "", "64 hex digits (32 bytes) seeding randomness with --deterministic (default all zeros)")
	fl.StringArrayVar(&f.env, "env", nil, "KEY=VALUE in the program's environment (repeatable)")
	fl.StringVar(&f.report, "report", "", `write the JSON run report to FILE ("-" for stderr)`)
	fl.StringVar(&f.engine, "engine", isolate.DefaultEngine, "WebAssembly engine: wazero or wasmtime (needs cloister-isolate-wasmtime next to cloister)")
	return cmd
}

// parseInputFlag splits an --input value into a valid /input/ name and a
// path.
func parseInputFlag(s string) (name, path string, err error) {
	name, path, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", fmt.Errorf("--input %q: want NAME=PATH", s)
	}
	if err := isolate.ValidateInputName(name); err != nil {
		return "", "", fmt.Errorf("--input %q: %v", s, err)
	}
	if path == "" {
		return "", "", fmt.Errorf("--input %q: the path is empty", s)
	}
	return name, path, nil
}

// parseEnvFlag checks an --env value.
func parseEnvFlag(s string) (string, error) {
	k, _, ok := strings.Cut(s, "=")
	switch {
	case !ok:
		return "", fmt.Errorf("--env %q: want KEY=VALUE", s)
	case k == "":
		return "", fmt.Errorf("--env %q: the key is empty", s)
	case strings.ContainsRune(s, 0):
		return "", fmt.Errorf("--env %q: contains a NUL byte", s)
	}
	return s, nil
}

// parseSeed decodes exactly 32 bytes of hex.
func parseSeed(s string) ([32]byte, error) {
	var seed [32]byte
	b, err := hex.DecodeString(s)
	if err != nil {
		return seed, fmt.Errorf("--seed: not hex: %v", err)
	}
	if len(b) != len(seed) {
		return seed, fmt.Errorf("--seed: want 32 bytes (64 hex digits), got %d bytes", len(b))
	}
	copy(seed[:], b)
	return seed, nil
}

// dataDir is where cloister keeps its state: $CLOISTER_DATA, else
// $XDG_DATA_HOME/cloister, else ~/.local/share/cloister.
func dataDir() (string, error) {
	if d := os.Getenv("CLOISTER_DATA"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "cloister"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no data directory: set CLOISTER_DATA (%v)", err)
	}
	return filepath.Join(home, ".local", "share", "cloister"), nil
}

func runRun(cmd *cobra.Command, f *runFlags, args []string) error {
	dash := cmd.ArgsLenAtDash()
	progArgs := args
	var guestArgs []string
	if dash >= 0 {
		progArgs, guestArgs = args[:dash], args[dash:]
	}
	if len(progArgs) != 1 {
		return usageError("want exactly one PROGRAM.wasm before \"--\", got %d arguments\nSee 'cloister run --help'.", len(progArgs))
	}
	program := progArgs[0]
	module, err := os.ReadFile(program)
	if err != nil {
		return usageError("reading the program: %v", err)
	}

	cfg := &isolate.Config{Module: module, Name: filepath.Base(program), Args: guestArgs, Deterministic: f.deterministic}
	mem, err := bytesize.Parse(f.memory)
	if err != nil {
		return usageError("--memory: %v", err)
	}
	if mem < 65536 || mem > 4<<30 {
		return usageError("--memory %s: must be between 64KiB and 4GiB (WebAssembly's 32-bit limit)", f.memory)
	}
	cfg.Memory = uint64(mem)
	maxOut, err := bytesize.Parse(f.maxOutput)
	if err != nil {
		return usageError("--max-output: %v", err)
	}
	if maxOut == 0 {
		return usageError("--max-output must be at least 1 byte")
	}
	cfg.MaxOutput = maxOut
	if f.timeout <= 0 {
		return usageError("--timeout %v: must be positive", f.timeout)
	}
	cfg.Timeout = f.timeout
	if f.seed != "" {
		if !f.deterministic {
			return usageError("--seed only has an effect with --deterministic")
		}
		if cfg.Seed, err = parseSeed(f.seed); err != nil {
			return usageError("%v", err)
		}
	}
	for _, e := range f.env {
		kv, err := parseEnvFlag(e)
		if err != nil {
			return usageError("%v", err)
		}
		cfg.Env = append(cfg.Env, kv)
	}
	seen := map[string]bool{}
	for _, in := range f.inputs {
		name, path, err := parseInputFlag(in)
		if err != nil {
			return usageError("%v", err)
		}
		if seen[name] {
			return usageError("--input: the name %q is given twice", name)
		}
		seen[name] = true
		// The runtime opens the file and hands the worker a descriptor:
		// nothing is read into memory here.
		if st, err := os.Stat(path); err != nil {
			return usageError("--input %s: %v", name, err)
		} else if !st.Mode().IsRegular() {
			return usageError("--input %s: %s is not a regular file", name, path)
		}
		cfg.Inputs = append(cfg.Inputs, isolate.Input{Name: name, Path: path})
	}
	if f.outputDir != "" {
		if err := os.MkdirAll(f.outputDir, 0o755); err != nil {
			return usageError("--output-dir: %v", err)
		}
	}

	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	if f.engine != isolate.EngineWazero && f.engine != isolate.EngineWasmtime {
		return usageError("--engine %q: one of %s, %s", f.engine, isolate.EngineWazero, isolate.EngineWasmtime)
	}
	opts := isolate.Options{Engine: f.engine}
	if dir, err := dataDir(); err == nil {
		opts.DataDir = dir
	} else {
		fmt.Fprintf(stderr, "cloister: warning: %v; running without the compilation cache\n", err)
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	rt, err := isolate.New(ctx, opts)
	if err != nil && opts.DataDir != "" && !errors.Is(err, isolate.ErrEngineUnavailable) {
		// Only the cache can be done without; a missing engine cannot.
		fmt.Fprintf(stderr, "cloister: warning: %v; running without the compilation cache\n", err)
		opts.DataDir = ""
		rt, err = isolate.New(ctx, opts)
	}
	if err != nil {
		return failure(err)
	}
	defer rt.Close()
	if why := rt.WorkerBinaryRefused(); why != "" {
		fmt.Fprintf(stderr, "cloister: warning: %s; workers are this binary re-executed (slower to start)\n", why)
	}
	// A local run offers the program every standard host call.
	cfg.HostCalls = isolate.StandardHostCalls()
	res, err := rt.Run(ctx, cfg)
	if err != nil {
		return failure(err)
	}
	defer res.Close()

	stdout.Write(res.Stdout)
	stderr.Write(res.Stderr)
	rep := &res.Report
	if w := weakerIsolation(rep); w != "" {
		fmt.Fprintln(stderr, w)
	}
	for _, w := range rep.Warnings {
		fmt.Fprintf(stderr, "cloister: warning: %s\n", w)
	}
	if f.outputDir != "" {
		for _, o := range res.Outputs {
			data, err := o.Bytes()
			if err == nil {
				err = atomicfile.WriteFile(filepath.Join(f.outputDir, o.Name), data, 0o644)
			}
			if err != nil {
				return failure(fmt.Errorf("saving output %s: %w", o.Name, err))
			}
		}
	}
	if f.report != "" {
		if err := writeReport(stderr, f.report, rep); err != nil {
			return failure(err)
		}
	}
	switch rep.Outcome {
	case isolate.OutcomeExited:
		if rep.ExitCode == 0 {
			return nil
		}
		return &ExitError{Code: rep.ExitCode, Silent: true}
	case isolate.OutcomeInvalid:
		return &ExitError{Code: isolate.ExitInvalid, Err: errors.New(rep.Error)}
	default:
		return &ExitError{Code: rep.ExitCode, Err: fmt.Errorf("%s: %s", rep.Outcome, rep.Error)}
	}
}

// writeReport writes the run report to dest, or to stderr when dest is "-".
func writeReport(stderr io.Writer, dest string, rep *isolate.Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the report: %w", err)
	}
	b = append(b, '\n')
	if dest == "-" {
		_, err = stderr.Write(b)
		return err
	}
	if err := atomicfile.WriteFile(dest, b, 0o644); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}

// weakerIsolation is the warning for protections not in force, or "". A
// user namespace that a root parent leaves out on purpose, because the
// worker holds only its set-up capabilities (setupcaps) until it drops to
// a uid of its own, is no weakness and is left to the report.
func weakerIsolation(rep *isolate.Report) string {
	var names []string
	for k := range rep.Missing {
		if k == "userns" && slices.Contains(rep.Protections, "setupcaps") {
			continue
		}
		names = append(names, k)
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	return fmt.Sprintf("cloister: warning: weaker isolation on this machine, not in force: %s (--report FILE says why)", strings.Join(names, ", "))
}
