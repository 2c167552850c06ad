package isolate

import (
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
)

// WorkerBinaryName is the lean worker executable (cmd/cloister-isolate).
// A Runtime uses it when it lies next to the running executable (or
// Options.WorkerBinary names it); otherwise workers are the running binary
// re-executed. Both run the same WorkerMain: the lean one only starts
// faster — it links nothing but this package and wazero, so a worker does
// not pay for the package initialisation of the whole node (about 20 ms of
// CPU per run for the cloister binary) — and, built without cgo, it can
// drop its set-up capabilities on every thread, which lets a root node skip
// the user namespace (decision 0002).
const WorkerBinaryName = "cloister-isolate"

// WorkerBinarySelf as Options.WorkerBinary forces workers to be the running
// binary re-executed, even where a cloister-isolate lies next to it.
const WorkerBinarySelf = "self"

// workerBinary is the executable workers are started from.
type workerBinary struct {
	path string   // what exec is given: /proc/self/exe or /proc/self/fd/N
	file *os.File // the pinned worker binary; nil for self
	// name is what the report and logs call it.
	name string
	// noCgo: the binary was built without cgo, so the worker can set its
	// capabilities on all threads (syscall.AllThreadsSyscall).
	noCgo bool
	// note says why the lean binary is not used (empty when it is).
	note string
	// refused is set when a cloister-isolate lies next to the running
	// executable but could not be used: the reason.
	refused string
}

func (b *workerBinary) close() {
	if b.file != nil {
		b.file.Close()
	}
}

// resolveWorkerBinary picks the worker executable: explicit names a
// cloister-isolate binary (an error if it is not a compatible one),
// WorkerBinarySelf the running binary, and "" the cloister-isolate next to
// the running executable if there is a compatible one, else the running
// binary. The chosen file is opened once and executed through its
// descriptor, so replacing the file later changes nothing.
func resolveWorkerBinary(explicit, engine string) (*workerBinary, error) {
	self := &workerBinary{path: "/proc/self/exe", name: "this binary re-executed", noCgo: selfNoCgo()}
	binName := engineWorkerName(engine)
	if _, linked := lookupEngine(engine); !linked {
		// Only the engine's own worker binary can run it.
		if explicit == "" || explicit == WorkerBinarySelf {
			exe, err := os.Executable()
			if err != nil {
				return nil, engineUnavailable(fmt.Errorf("isolate: the %s engine runs in %s: cannot locate the running executable: %v", engine, binName, err))
			}
			explicit = filepath.Join(filepath.Dir(exe), binName)
			if _, err := os.Stat(explicit); err != nil {
				return nil, engineUnavailable(fmt.Errorf("isolate: the %s engine runs in its own worker binary, and there is no %s next to %s (build it: go build -tags cloister_wasmtime -o DIR ./cmd/%s)", engine, binName, exe, binName))
			}
		}
		b, err := openWorkerBinary(explicit, engine)
		if err != nil {
			return nil, engineUnavailable(err)
		}
		return b, nil
	}
	switch explicit {
	case WorkerBinarySelf:
		self.note = "Options.WorkerBinary asks for this binary re-executed"
		return self, nil
	case "":
		exe, err := os.Executable()
		if err != nil {
			self.note = fmt.Sprintf("cannot locate the running executable: %v", err)
			return self, nil
		}
		candidate := filepath.Join(filepath.Dir(exe), binName)
		if _, err := os.Stat(candidate); err != nil {
			self.note = fmt.Sprintf("no %s next to %s: workers are this binary re-executed (slower to start)", binName, exe)
			return self, nil
		}
		b, err := openWorkerBinary(candidate, engine)
		if err != nil {
			self.note = fmt.Sprintf("%v: workers are this binary re-executed", err)
			self.refused = err.Error()
			return self, nil
		}
		return b, nil
	default:
		return openWorkerBinary(explicit, engine)
	}
}

// openWorkerBinary opens path and checks that it is a cloister-isolate
// built from the same versions of the modules the worker protocol and the
// compilation cache depend on.
func openWorkerBinary(path, engine string) (*workerBinary, error) {
	wantPackage := "github.com/cloisterhq/cloister/cmd/" + engineWorkerName(engine)
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("isolate: worker binary %s: %w", path, err)
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("isolate: worker binary: %w", err)
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		f.Close()
		return nil, fmt.Errorf("isolate: worker binary %s is not an executable file", abs)
	}
	// The file is pinned by descriptor, not its contents: whoever could
	// rewrite it in place could run code in every worker (as root, for a
	// root node).
	if st.Mode().Perm()&0o022 != 0 {
		f.Close()
		return nil, fmt.Errorf("isolate: worker binary %s is writable by group or others (mode %v)", abs, st.Mode().Perm())
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 && int(sys.Uid) != os.Geteuid() {
		f.Close()
		return nil, fmt.Errorf("isolate: worker binary %s belongs to uid %d, neither root nor this process's user", abs, sys.Uid)
	}
	info, err := buildinfo.Read(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("isolate: worker binary %s is not a Go program: %v", abs, err)
	}
	if info.Path != wantPackage {
		f.Close()
		return nil, fmt.Errorf("isolate: worker binary %s is %q, not %s", abs, info.Path, wantPackage)
	}
	if err := sameDeps(info); err != nil {
		f.Close()
		return nil, fmt.Errorf("isolate: worker binary %s: %v; rebuild it from this source (go build ./cmd/%s)", abs, err, engineWorkerName(engine))
	}
	b := &workerBinary{
		path:  fmt.Sprintf("/proc/self/fd/%d", f.Fd()),
		file:  f,
		name:  abs,
		noCgo: setting(info, "CGO_ENABLED") == "0",
	}
	if err := b.probe(); err != nil {
		f.Close()
		return nil, fmt.Errorf("isolate: worker binary %s: %w", abs, err)
	}
	return b, nil
}

// probe asks the binary for its protocol identifier (a few milliseconds,
// once): one from another build of this source passes the build-info check
// but would fail every run.
func (b *workerBinary) probe() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.path)
	cmd.Args = []string{WorkerBinaryName}
	cmd.Env = []string{workerEnv + "=" + workerProbe}
	cmd.WaitDelay = time.Second
	var out, errOut limitedBuffer
	out.max, errOut.max = 256, 1024
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("asking for its protocol: %v (a build from before protocol probes?) %s", err, strings.TrimSpace(errOut.buf.String()))
	}
	return checkProtocol(strings.TrimSpace(out.buf.String()))
}

// pinnedModules are the modules whose versions must agree between the
// node and its worker binary: the Wasm runtime (compiled-code cache format,
// semantics) and the system-call wrappers the jail is built from.
var pinnedModules = []string{"github.com/tetratelabs/wazero", "golang.org/x/sys"}

func sameDeps(worker *debug.BuildInfo) error {
	own, ok := debug.ReadBuildInfo()
	if !ok {
		return nil // nothing to compare with; the ready message still checks the protocol
	}
	if worker.GoVersion != own.GoVersion {
		return fmt.Errorf("built with %s, this binary with %s", worker.GoVersion, own.GoVersion)
	}
	for _, mod := range pinnedModules {
		// Test binaries carry no module list: nothing to compare then.
		if w, o := depVersion(worker, mod), depVersion(own, mod); o != "(none)" && w != o {
			return fmt.Errorf("built with %s %s, this binary with %s", mod, w, o)
		}
	}
	return nil
}

func depVersion(info *debug.BuildInfo, path string) string {
	for _, d := range info.Deps {
		if d.Path == path {
			if d.Replace != nil {
				return d.Replace.Path + "@" + d.Replace.Version
			}
			return d.Version
		}
	}
	return "(none)"
}

func setting(info *debug.BuildInfo, key string) string {
	for _, s := range info.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}

func selfNoCgo() bool {
	info, ok := debug.ReadBuildInfo()
	return ok && setting(info, "CGO_ENABLED") == "0"
}

// workerFeatures lists what a worker is asked to do outside the messages:
// the environment it reads and the jail steps the parent relies on. A
// change to any of them must change this list, so that a worker binary
// that predates it is refused (the parent also checks, fail-closed, that a
// worker reports joining the network namespace it was handed).
var workerFeatures = []string{
	workerEnv, workerNSEnv, workerCacheEnv, workerUIDEnv, workerNetnsEnv, workerEngineEnv,
	"setupcaps:setuid,setgid", "emptyroot:ro", "cache:nosuid,nodev,noexec",
	"stdin:unix-stream,scm_rights", "fsize:output-area",
}

// workerProtocolID names the parent–worker protocol: a version, and a
// digest of the features and of the shape of every message type
// (describeProtocol), so that a worker binary from another build is refused
// at its first message rather than misread. It is a constant because every
// worker sends it and computing it by reflection cost each one ~0.1 ms;
// TestWorkerProtocolIDIsCurrent fails, giving the new value, as soon as a
// feature or a message type changes without it.
const workerProtocolID = "cloister-isolate/4+5e00c5835bf3c6df"

// workerProtocol returns the identifier (a variable so that tests can play
// a worker from another build).
var workerProtocol = func() string { return workerProtocolID }

// describeProtocol computes what workerProtocolID must be.
func describeProtocol() string {
	h := sha256.New()
	for _, f := range workerFeatures {
		fmt.Fprintf(h, "%s\x00", f)
	}
	seen := map[reflect.Type]bool{}
	for _, v := range []any{workerInput{}, job{}, readyMsg{}, lockedMsg{}, wireResult{}, callMsg{}, replyMsg{}, secretMsg{}} {
		describeType(h, reflect.TypeOf(v), seen)
	}
	return "cloister-isolate/4+" + hex.EncodeToString(h.Sum(nil)[:8])
}

func describeType(w interface{ Write([]byte) (int, error) }, t reflect.Type, seen map[reflect.Type]bool) {
	fmt.Fprintf(w, "%s:%s(", t.Kind(), t.String())
	if !seen[t] {
		seen[t] = true
		switch t.Kind() {
		case reflect.Struct:
			for i := 0; i < t.NumField(); i++ {
				f := t.Field(i)
				fmt.Fprintf(w, "%s %q ", f.Name, f.Tag)
				describeType(w, f.Type, seen)
			}
		case reflect.Pointer, reflect.Slice, reflect.Array:
			describeType(w, t.Elem(), seen)
		case reflect.Map:
			describeType(w, t.Key(), seen)
			describeType(w, t.Elem(), seen)
		}
	}
	w.Write([]byte(")"))
}

// errWorkerProtocol: the worker binary answered with another protocol.
var errWorkerProtocol = errors.New("isolate: the worker binary speaks another protocol")

func checkProtocol(got string) error {
	if want := workerProtocol(); got != want {
		if got == "" {
			got = "none"
		}
		return fmt.Errorf("%w (%s, this binary %s): rebuild %s from this source", errWorkerProtocol, strings.TrimSpace(got), want, WorkerBinaryName)
	}
	return nil
}
