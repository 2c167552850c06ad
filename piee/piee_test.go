package piee

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/workerbuild"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/ledger/challenge"
	"github.com/cloisterhq/cloister/piee/operators/ops"
)

func TestMain(m *testing.M) {
	if isolate.IsWorker() {
		os.Exit(isolate.WorkerMain())
	}
	code := m.Run()
	workerbuild.Cleanup()
	os.Exit(code)
}

// The committed operators.wasm is what its source builds to (with the Go
// version in GOVERSION; skipped, saying why, with another).
func TestReproducibleOperators(t *testing.T) {
	if testing.Short() {
		t.Skip("rebuilds the operators module; skipped with -short")
	}
	want, err := os.ReadFile("operators/GOVERSION")
	if err != nil {
		t.Fatal(err)
	}
	have, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(have)) != strings.TrimSpace(string(want)) {
		t.Skipf("operators.wasm was built with %s, this toolchain is %s: rebuild with piee/operators/build.sh to compare", want, have)
	}
	out := t.TempDir()
	if b, err := exec.Command("bash", "operators/build.sh", out).CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	}
	fresh, err := os.ReadFile(filepath.Join(out, "operators.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fresh, operatorsWasm) {
		t.Fatalf("operators.wasm differs from a fresh build of its source: run piee/operators/build.sh and commit")
	}
}

// Every built-in operator gives the same Q, byte for byte, however the
// node runs it: a cold jailed worker compiling from scratch, a warm
// jailed worker from the compilation cache (run twice), the engine in
// the node's own process, and — for the arithmetic — under a larger
// memory limit and natively (the same Go source compiled for amd64).
// The probes' Q is the isolation outcome, the same in every jailed run.
// Only amd64 is available here. The engine is wazero's compiler on
// every path but one: a jailed worker running wasmtime.
func TestOperatorsDeterministic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cold, err := isolate.New(ctx, isolate.Options{WarmWorkers: 0, WorkerBinary: isolate.WorkerBinarySelf})
	if err != nil {
		t.Fatal(err)
	}
	defer cold.Close()
	warm, err := isolate.New(ctx, isolate.Options{DataDir: t.TempDir(), WarmWorkers: 1, WorkerBinary: isolate.WorkerBinarySelf})
	if err != nil {
		t.Fatal(err)
	}
	defer warm.Close()
	inproc, err := isolate.New(ctx, isolate.Options{InProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer inproc.Close()
	// The other engine, in its own jailed worker: a node that runs
	// wasmtime must give every operator's Q bit for bit.
	wtBin, err := workerbuild.BuildWasmtime()
	if err != nil {
		t.Fatal(err)
	}
	wt, err := isolate.New(ctx, isolate.Options{Engine: isolate.EngineWasmtime, WorkerBinary: wtBin})
	if err != nil {
		t.Fatal(err)
	}
	defer wt.Close()
	seed := strings.Repeat("5a", 32)
	for _, op := range Builtin() {
		if raceBuild && !slices.Contains([]string{"hashchain", "probe-memory"}, op.Name) {
			continue // the race detector slows wazero's compiler tenfold: two operators stand for the rest
		}
		t.Run(op.Name, func(t *testing.T) {
			type variant struct {
				name string
				r    Runner
				op   challenge.Operator
			}
			vs := []variant{{"cold", cold, op}, {"warm", warm, op}, {"warm-cached", warm, op}, {"wasmtime", wt, op}}
			if op.Class == challenge.ClassArith && !raceBuild { // in-process, a race build compiles past any timeout
				big := op
				big.Memory = 256 << 20
				vs = append(vs, variant{"in-process", inproc, op}, variant{"more-memory", cold, big})
			}
			var first challenge.Run
			for i, v := range vs {
				run, err := Execute(ctx, v.r, v.op, seed, "software")
				if err != nil {
					t.Fatalf("%s: %v", v.name, err)
				}
				if i == 0 {
					first = run
					t.Logf("%s: outcome %s, exit %d, Q %.16s…", v.name, run.Outcome, run.ExitCode, challenge.ResultDigest(run))
					continue
				}
				if challenge.ResultDigest(run) != challenge.ResultDigest(first) {
					t.Errorf("%s: %+v, cold gave %+v", v.name, run, first)
				}
			}
			switch op.Name {
			case "probe-memory":
				if first.Outcome != string(isolate.OutcomeMemory) {
					t.Errorf("probe-memory: outcome %s, want memory (the isolate stops it at its limit)", first.Outcome)
				}
			case "probe-deadline":
				if first.Outcome != string(isolate.OutcomeTimeout) {
					t.Errorf("probe-deadline: outcome %s, want timeout", first.Outcome)
				}
			case "probe-network", "probe-files":
				if first.Outcome != string(isolate.OutcomeExited) || first.Output == "" {
					t.Errorf("%s: %+v", op.Name, first)
				}
			default:
				n, _ := strconv.Atoi(op.Args[1])
				sb, _ := hex.DecodeString(seed)
				native, err := ops.Compute(op.Name, n, sb)
				if err != nil {
					t.Fatal(err)
				}
				h := sha256.Sum256(native)
				if first.Output != hex.EncodeToString(h[:]) || first.Outcome != "exited" {
					t.Errorf("%s in the isolate: %+v; native output %x", op.Name, first, h)
				}
			}
		})
	}
}

// What the probes found is what the isolate promises: no network, no file
// outside /input and /output.
func TestProbesFindNothing(t *testing.T) {
	if raceBuild {
		t.Skip("two more compilations of the operator program; TestOperatorsDeterministic stands for it in a race build")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rt, err := isolate.New(ctx, isolate.Options{WorkerBinary: isolate.WorkerBinarySelf})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	for _, name := range []string{"probe-network", "probe-files"} {
		cfg := &isolate.Config{Module: operatorsWasm, Args: []string{name, strings.Repeat("00", 32)}, Timeout: time.Minute, Deterministic: true}
		res, err := rt.Run(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		var out []byte
		for _, o := range res.Outputs {
			if o.Name == ResultFile {
				out, _ = o.Bytes()
			}
		}
		res.Close()
		if bytes.Contains(out, []byte(": allowed")) || bytes.Contains(out, []byte(": reached")) || len(out) == 0 {
			t.Errorf("%s found a way out:\n%s", name, out)
		}
		t.Logf("%s:\n%s", name, out)
	}
}

// The draw is a function of the beacon alone; verifiers never include the
// node itself; the tally separates fail from unavailable.
func TestDrawAndTally(t *testing.T) {
	nodes := []string{"a", "b", "c", "d", "e"}
	b1, b2 := challenge.Beacon([]byte("note 1")), challenge.Beacon([]byte("note 2"))
	d1, d1again, d2 := challenge.Draw(b1, 1, nodes, []string{"x", "y"}, 3), challenge.Draw(b1, 1, nodes, []string{"x", "y"}, 3), challenge.Draw(b2, 1, nodes, []string{"x", "y"}, 3)
	same := true
	for i := range d1 {
		if d1[i].ID != d1again[i].ID {
			t.Fatal("the draw is not a function of its beacon")
		}
		if d1[i].Seed != d2[i].Seed {
			same = false
		}
		if len(d1[i].Verifiers) != 3 || bytes.Contains([]byte(strings.Join(d1[i].Verifiers, ",")), []byte(d1[i].Node)) {
			t.Errorf("challenge of %s: verifiers %v", d1[i].Node, d1[i].Verifiers)
		}
	}
	if same {
		t.Error("another beacon drew the same seeds")
	}
	ch := d1[0]
	v := ch.Verifiers
	cases := []struct {
		name    string
		results map[string]string
		want    string
	}{
		{"all agree", map[string]string{ch.Node: "q", v[0]: "q", v[1]: "q", v[2]: "q"}, challenge.Pass},
		{"one liar verifier", map[string]string{ch.Node: "q", v[0]: "q", v[1]: "x", v[2]: "q"}, challenge.Pass},
		{"wrong node", map[string]string{ch.Node: "x", v[0]: "q", v[1]: "q"}, challenge.Fail},
		{"node down", map[string]string{v[0]: "q", v[1]: "q", v[2]: "q"}, challenge.Unavailable},
		{"node alone", map[string]string{ch.Node: "q"}, challenge.Inconclusive},
		{"split", map[string]string{ch.Node: "q", v[0]: "x"}, challenge.Inconclusive},
		{"node and one verifier", map[string]string{ch.Node: "q", v[0]: "q"}, challenge.Pass},
	}
	for _, c := range cases {
		if got := challenge.Tally(1, ch, c.results, "software"); got.Outcome != c.want {
			t.Errorf("%s: %s, want %s", c.name, got.Outcome, c.want)
		}
	}
	if p := challenge.Proves(challenge.Pass, "software"); !strings.Contains(p, "availability and correct arithmetic only") {
		t.Errorf("a software pass claims %q", p)
	}
	if p := challenge.Proves(challenge.Pass, "sev-snp"); !strings.Contains(p, "isolation") {
		t.Errorf("a sev-snp pass claims %q", p)
	}
}
