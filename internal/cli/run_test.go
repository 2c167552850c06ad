package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/isolate"
)

// TestMain lets the isolate runtime re-execute this test binary as its
// jailed worker (cloister run uses the worker, as in production).
// With CLOISTER_TEST_CLI=1 the test binary is the cloister command line
// itself, for tests of commands that start other processes of it ('up').
func TestMain(m *testing.M) {
	if isolate.IsWorker() {
		os.Exit(isolate.WorkerMain())
	}
	if os.Getenv("CLOISTER_TEST_CLI") == "1" {
		os.Exit(Execute())
	}
	os.Exit(m.Run())
}

// runCLI runs the command line with stdout and stderr captured.
func runRunCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Setenv("CLOISTER_DATA", filepath.Join(t.TempDir(), "data"))
	return runCLI(t, args...)
}

// exitModule is a WASI command whose _start calls proc_exit(code).
func exitModule(code byte) []byte {
	return []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
		0x01, 0x08, 0x02, 0x60, 0x00, 0x00, 0x60, 0x01, 0x7f, 0x00, // types () and (i32)
		0x02, 0x24, 0x01, 0x16, 'w', 'a', 's', 'i', '_', 's', 'n', 'a', 'p', 's', 'h', 'o', 't', '_', 'p', 'r', 'e', 'v', 'i', 'e', 'w', '1',
		0x09, 'p', 'r', 'o', 'c', '_', 'e', 'x', 'i', 't', 0x00, 0x01,
		0x03, 0x02, 0x01, 0x00,
		0x05, 0x03, 0x01, 0x00, 0x01,
		0x07, 0x13, 0x02, 0x06, '_', 's', 't', 'a', 'r', 't', 0x00, 0x01, 0x06, 'm', 'e', 'm', 'o', 'r', 'y', 0x02, 0x00,
		0x0a, 0x08, 0x01, 0x06, 0x00, 0x41, code & 0x3f, 0x10, 0x00, 0x0b,
	}
}

func writeRunTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunExitStatusAndReport(t *testing.T) {
	prog := writeRunTemp(t, "exit.wasm", exitModule(7))
	report := filepath.Join(t.TempDir(), "report.json")
	code, _, stderr := runRunCLI(t, "run", "--report", report, prog)
	if code != 7 {
		t.Fatalf("exit %d, want the program's own 7 (stderr %q)", code, stderr)
	}
	var rep isolate.Report
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Outcome != isolate.OutcomeExited || rep.ExitCode != 7 || len(rep.ProgramSHA256) != 64 || !containsString(rep.Protections, "worker") {
		t.Errorf("report %+v", rep)
	}
	for _, field := range []string{`"outcome"`, `"exit_code"`, `"wall_ms"`, `"program_sha256"`, `"outputs"`, `"protections"`} {
		if !bytes.Contains(b, []byte(field)) {
			t.Errorf("report lacks %s", field)
		}
	}
	if w := weakerIsolation(&rep); w != "" && !strings.Contains(stderr, w) {
		t.Errorf("missing protections %v without the warning %q on stderr %q", rep.Missing, w, stderr)
	}
	if strings.Contains(stderr, "node") {
		t.Errorf("cloister run, with no node involved, speaks of a node: %q", stderr)
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestRunUsageErrors(t *testing.T) {
	prog := writeRunTemp(t, "exit.wasm", exitModule(0))
	input := writeRunTemp(t, "in.txt", []byte("x"))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run"}, "exactly one PROGRAM.wasm"},
		{[]string{"run", prog, prog}, "exactly one PROGRAM.wasm"},
		{[]string{"run", "/nonexistent.wasm"}, "reading the program"},
		{[]string{"run", "--input", "../x=" + input, prog}, "plain file name"},
		{[]string{"run", "--input", "a/b=" + input, prog}, "plain file name"},
		{[]string{"run", "--input", "=" + input, prog}, "empty"},
		{[]string{"run", "--input", "noequals", prog}, "NAME=PATH"},
		{[]string{"run", "--input", "a=/nonexistent/file", prog}, "no such file"},
		{[]string{"run", "--input", "a=" + input, "--input", "a=" + input, prog}, "twice"},
		{[]string{"run", "--env", "NOVALUE", prog}, "KEY=VALUE"},
		{[]string{"run", "--env", "=v", prog}, "key is empty"},
		{[]string{"run", "--memory", "lots", prog}, "--memory"},
		{[]string{"run", "--memory", "8GiB", prog}, "between 64KiB and 4GiB"},
		{[]string{"run", "--max-output", "1.5MiB", prog}, "--max-output"},
		{[]string{"run", "--timeout", "-1s", prog}, "positive"},
		{[]string{"run", "--deterministic", "--seed", "abcd", prog}, "want 32 bytes"},
		{[]string{"run", "--deterministic", "--seed", "zz", prog}, "not hex"},
		{[]string{"run", "--seed", strings.Repeat("00", 32), prog}, "--deterministic"},
		{[]string{"run", "--bogus", prog}, "unknown flag"},
	} {
		code, _, stderr := runRunCLI(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestRunInvalidModule(t *testing.T) {
	prog := writeRunTemp(t, "bad.wasm", []byte("not wasm at all"))
	code, _, stderr := runRunCLI(t, "run", prog)
	if code != 2 || !strings.Contains(stderr, "invalid module") {
		t.Errorf("exit %d stderr %q", code, stderr)
	}
}

func TestRunDeterministicSeed(t *testing.T) {
	prog := writeRunTemp(t, "exit.wasm", exitModule(0))
	code, _, stderr := runRunCLI(t, "run", "--deterministic", "--seed", strings.Repeat("ab", 32), "--report", "-", prog, "--", "a", "b")
	if code != 0 || !strings.Contains(stderr, `"deterministic": true`) {
		t.Errorf("exit %d stderr %q", code, stderr)
	}
}

func FuzzParseInputFlag(f *testing.F) {
	for _, s := range []string{"a=b", "data.csv=/tmp/x", "../x=y", "a/b=c", "=x", "x=", "noeq", "a=b=c", ".=x", "..=x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, path, err := parseInputFlag(s)
		if err != nil {
			return
		}
		if name+"="+path != s || isolate.ValidateInputName(name) != nil || path == "" {
			t.Fatalf("%q accepted as %q, %q", s, name, path)
		}
		if strings.Contains(name, "/") || name == ".." || name == "." {
			t.Fatalf("unsafe name %q accepted", name)
		}
	})
}

func FuzzParseEnvFlag(f *testing.F) {
	for _, s := range []string{"A=b", "A=", "=b", "A", "A=b=c", "A=\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kv, err := parseEnvFlag(s)
		if err != nil {
			return
		}
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || kv != s || strings.ContainsRune(s, 0) {
			t.Fatalf("%q accepted", s)
		}
	})
}

// TestRunEngineWithoutWorker: --engine wasmtime with no
// cloister-isolate-wasmtime next to the binary (none lies next to a test
// binary) is refused once, saying what is missing: no warning about the
// compilation cache first, which is not what is at fault.
func TestRunEngineWithoutWorker(t *testing.T) {
	prog := writeRunTemp(t, "exit.wasm", exitModule(0))
	code, _, stderr := runRunCLI(t, "run", "--engine", "wasmtime", prog)
	if code != 1 || strings.Count(stderr, "cloister-isolate-wasmtime next to") != 1 || strings.Contains(stderr, "warning") {
		t.Errorf("exit %d, stderr %q; want 1 and one message naming the missing worker binary", code, stderr)
	}
}
