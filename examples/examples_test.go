package examples

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/isolate"
)

func TestMain(m *testing.M) {
	if isolate.IsWorker() {
		os.Exit(isolate.WorkerMain())
	}
	code := m.Run()
	if shared.rt != nil {
		shared.rt.Close()
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// shared is one jailed runtime for every test, so that each module is
// compiled once into its cache (compiling a 3 MB Go module takes seconds).
var shared struct {
	once sync.Once
	rt   *isolate.Runtime
	dir  string
	err  error
}

// The list of examples is kept in three places (Names, build.sh, the
// directories); they must agree.
func TestNamesMatchSources(t *testing.T) {
	var dirs []string
	mains, _ := filepath.Glob("*/main.go")
	for _, m := range mains {
		dirs = append(dirs, filepath.Dir(m))
	}
	slices.Sort(dirs)
	if !slices.Equal(dirs, Names) {
		t.Fatalf("directories with main.go %v, Names %v", dirs, Names)
	}
	script, err := os.ReadFile("build.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^examples=\(([^)]*)\)`).FindSubmatch(script)
	if m == nil {
		t.Fatal("build.sh: no examples=(...) line")
	}
	built := strings.Fields(string(m[1]))
	slices.Sort(built)
	if !slices.Equal(built, Names) {
		t.Fatalf("build.sh builds %v, Names %v", built, Names)
	}
}

func TestLookup(t *testing.T) {
	for name, wasm := range map[string][]byte{
		"psi-sum": PSISum(), "shamir": Shamir(), "wordcount": WordCount(),
		"sha256sum": SHA256Sum(), "linreg": LinReg(),
	} {
		p, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p.Wasm, wasm) || !bytes.HasPrefix(wasm, []byte("\x00asm\x01\x00\x00\x00")) {
			t.Errorf("%s: accessor and Lookup disagree or not a Wasm module", name)
		}
		if len(p.Inputs) == 0 || len(p.Outputs) == 0 || len(p.Stdout) == 0 {
			t.Errorf("%s: sample run incomplete: %d inputs, %d outputs, %d stdout bytes", name, len(p.Inputs), len(p.Outputs), len(p.Stdout))
		}
	}
	p, _ := Lookup("psi-sum")
	p.Wasm[0] = 'X' // copies, so the embedded module is untouched
	if PSISum()[0] != 0 {
		t.Fatal("Lookup returned the embedded bytes themselves")
	}
	if _, err := Lookup("../psi-sum"); err == nil || !strings.Contains(err.Error(), "no example") {
		t.Fatalf("Lookup(../psi-sum) = %v", err)
	}
}

// TestReproducibleBuild rebuilds every module from source with build.sh and
// requires the committed bytes. The Go toolchain's output differs between
// Go versions, so the check runs only with the version recorded in
// GOVERSION (written by build.sh); with another version it is skipped and
// says why. Same version, same bytes, on any machine: nothing in the build
// depends on paths, time, VCS state or the host's OS and CPU.
func TestReproducibleBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("rebuilds five modules (tens of seconds on a cold cache); skipped with -short")
	}
	want, err := os.ReadFile("GOVERSION")
	if err != nil {
		t.Fatal(err)
	}
	have, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatalf("go env GOVERSION: %v", err)
	}
	if strings.TrimSpace(string(have)) != strings.TrimSpace(string(want)) {
		t.Skipf("modules were built with %s, this toolchain is %s: rebuild with examples/build.sh to compare",
			strings.TrimSpace(string(want)), strings.TrimSpace(string(have)))
	}
	out := t.TempDir()
	cmd := exec.Command("bash", "build.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	}
	for _, n := range Names {
		fresh, err := os.ReadFile(filepath.Join(out, n+".wasm"))
		if err != nil {
			t.Fatal(err)
		}
		committed, _ := os.ReadFile(filepath.Join(n, n+".wasm"))
		if !bytes.Equal(fresh, committed) {
			t.Errorf("%s/%s.wasm differs from a fresh build of its source (%d vs %d bytes): run examples/build.sh and commit", n, n, len(committed), len(fresh))
		}
	}
}

func newRuntime(t *testing.T) *isolate.Runtime {
	t.Helper()
	shared.once.Do(func() {
		if shared.dir, shared.err = os.MkdirTemp("", "cloister-examples-"); shared.err != nil {
			return
		}
		shared.rt, shared.err = isolate.New(context.Background(), isolate.Options{DataDir: shared.dir})
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.rt
}

func inputs(files []File) []isolate.Input {
	in := make([]isolate.Input, len(files))
	for i, f := range files {
		in[i] = isolate.Input{Name: f.Name, Data: f.Data}
	}
	return in
}

func run(t *testing.T, rt *isolate.Runtime, wasm []byte, in []isolate.Input) *isolate.Result {
	t.Helper()
	// The limits cover compiling the module, which takes seconds natively
	// but minutes when the compiler runs under the race detector on a
	// loaded machine; this test checks outputs, not speed.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	res, err := rt.Run(ctx, &isolate.Config{Module: wasm, Inputs: in, Timeout: 15 * time.Minute, Deterministic: true, HostCalls: isolate.StandardHostCalls()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Close() })
	return res
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TestExamplesInJailedIsolate runs every committed module through the real
// jailed worker with its sample inputs and requires the recorded outputs
// and stdout byte for byte.
func TestExamplesInJailedIsolate(t *testing.T) {
	rt := newRuntime(t)
	for _, name := range Names {
		t.Run(name, func(t *testing.T) {
			if name == "fedlogreg" {
				t.Skip("fedlogreg calls sub-models on other nodes: federation's tests and 'cloister demo federation' run it")
			}
			p, err := Lookup(name)
			if err != nil {
				t.Fatal(err)
			}
			res := run(t, rt, p.Wasm, inputs(p.Inputs))
			if res.Report.Outcome != isolate.OutcomeExited || res.Report.ExitCode != 0 {
				t.Fatalf("outcome %s, exit %d, error %q, stderr %q", res.Report.Outcome, res.Report.ExitCode, res.Report.Error, res.Stderr)
			}
			if !bytes.Equal(res.Stdout, p.Stdout) {
				t.Errorf("stdout %q, want %q", res.Stdout, p.Stdout)
			}
			got := map[string][]byte{}
			for _, o := range res.Outputs {
				b, err := o.Bytes()
				if err != nil {
					t.Fatal(err)
				}
				got[o.Name] = b
			}
			if len(got) != len(p.Outputs) {
				t.Errorf("%d outputs, want %d", len(got), len(p.Outputs))
			}
			for _, o := range p.Outputs {
				if !bytes.Equal(got[o.Name], o.Data) {
					t.Errorf("output %s = %q, want %q", o.Name, got[o.Name], o.Data)
				}
			}
		})
	}
	t.Run("shamir-secret", func(t *testing.T) {
		p, _ := Lookup("shamir")
		res := run(t, rt, p.Wasm, inputs(p.Inputs))
		if len(res.Outputs) != 1 || res.Outputs[0].Name != "secret" || string(must(res.Outputs[0].Bytes())) != "Hello World!\n" {
			t.Fatalf("outputs %+v, want secret = %q", res.Outputs, "Hello World!\n")
		}
	})
}

// Two of the three published shares are below the threshold: the program
// still exits 0 (Shamir's scheme cannot detect it) but the bytes are not the
// secret.
func TestShamirBelowThresholdInIsolate(t *testing.T) {
	rt := newRuntime(t)
	p, _ := Lookup("shamir")
	res := run(t, rt, p.Wasm, inputs(p.Inputs[:2]))
	if res.Report.Outcome != isolate.OutcomeExited || res.Report.ExitCode != 0 {
		t.Fatalf("outcome %s, exit %d, stderr %q", res.Report.Outcome, res.Report.ExitCode, res.Stderr)
	}
	if len(res.Stdout) != 13 || string(res.Stdout) == "Hello World!\n" {
		t.Fatalf("two shares gave %q; must be 13 bytes that are not the secret", res.Stdout)
	}
}

// Bad input reaches guest.Fail inside the isolate: exit 1 and a message
// naming the input and line, and no output.
func TestGuestFailureInIsolate(t *testing.T) {
	rt := newRuntime(t)
	res := run(t, rt, PSISum(), []isolate.Input{
		{Name: "customers.csv", Data: []byte("id\nc-1\n")},
		{Name: "purchases.csv", Data: []byte("id,amount\nc-1,12.50\n")},
	})
	if res.Report.Outcome != isolate.OutcomeExited || res.Report.ExitCode != 1 {
		t.Fatalf("outcome %s, exit %d", res.Report.Outcome, res.Report.ExitCode)
	}
	want := `psi-sum: input "purchases.csv" line 2: amount "12.50" is not an integer (give amounts in cents)` + "\n"
	if string(res.Stderr) != want {
		t.Fatalf("stderr %q, want %q", res.Stderr, want)
	}
	if len(res.Outputs) != 0 {
		t.Fatalf("outputs after failure: %+v", res.Outputs)
	}
}
