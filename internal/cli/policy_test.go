package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/internal/corpus"
	"github.com/cloisterhq/cloister/policy"
)

// examplePolicy returns the path of a committed example policy.
func examplePolicy(t *testing.T, name string) string {
	return filepath.Join(corpus.ModuleRoot(t), "examples", "policies", name)
}

func TestPolicyValidateAndHash(t *testing.T) {
	t.Parallel()
	path := examplePolicy(t, "psi-sum.json")
	p, err := policy.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "policy", "validate", path)
	if code != ExitOK || stdout != "valid: psi-sum "+p.HashHex()+"\n" {
		t.Fatalf("validate: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, "policy", "hash", path)
	if code != ExitOK || stdout != p.HashHex()+"\n" || !regexp.MustCompile(`^[0-9a-f]{64}\n$`).MatchString(stdout) {
		t.Fatalf("hash: exit %d %q", code, stdout)
	}
	// Reformatting the file does not change the printed hash.
	data, _ := os.ReadFile(path)
	var v any
	json.Unmarshal(data, &v)
	compact, _ := json.Marshal(v)
	other := filepath.Join(t.TempDir(), "compact.json")
	os.WriteFile(other, compact, 0o644)
	if _, out2, _ := runCLI(t, "policy", "hash", other); out2 != stdout {
		t.Fatalf("hash changed with formatting: %s vs %s", out2, stdout)
	}
}

func TestPolicyValidateListsEveryProblem(t *testing.T) {
	t.Parallel()
	data, _ := os.ReadFile(examplePolicy(t, "psi-sum.json"))
	s := strings.Replace(string(data), `"version": 1`, `"version": 2`, 1)
	s = strings.Replace(s, `"64MiB"`, `"64 MiB"`, 1)
	s = strings.Replace(s, `"readers": ["dave"]`, `"readers": ["eve"]`, 1)
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(s), 0o644)
	code, _, stderr := runCLI(t, "policy", "validate", bad)
	if code != ExitFailure {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"3 problem(s)", "version: must be 1", `outputs[0].readers[0]: no principal has id "eve"`, "limits.memory:"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	code, stdout, _ := runCLI(t, "policy", "validate", bad, "--json")
	var res struct {
		Valid    bool             `json:"valid"`
		Problems []policy.Problem `json:"problems"`
	}
	if code != ExitFailure || json.Unmarshal([]byte(stdout), &res) != nil || res.Valid || len(res.Problems) != 3 {
		t.Fatalf("--json: exit %d %s", code, stdout)
	}
	if code, _, _ := runCLI(t, "policy", "hash", bad); code != ExitFailure {
		t.Fatalf("hash of an invalid policy: exit %d", code)
	}
}

func TestPolicyUnreadable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notJSON := filepath.Join(dir, "p.yaml")
	os.WriteFile(notJSON, []byte("version: 1\n"), 0o644)
	for _, args := range [][]string{
		{"policy", "validate", filepath.Join(dir, "missing.json")},
		{"policy", "validate", notJSON},
		{"policy", "hash", notJSON},
		{"policy", "show", notJSON},
		{"policy", "validate"},
	} {
		if code, _, _ := runCLI(t, args...); code != ExitUsage {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

func TestPolicyShow(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runCLI(t, "policy", "show", examplePolicy(t, "psi-sum-tee.json"))
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"policy   psi-sum-tee",
		"alice  uploads program  psi-sum.wasm",
		"bob    uploads input    customers.csv",
		"carol  uploads input    purchases.csv",
		"dave   reads output     result.json",
		"sev-snp", "hardware-protected", "security versions bootloader >= 3, microcode >= 115, snp >= 8, tee >= 0",
		"tdx", "TCB status one of UpToDate",
		"memory 64MiB, timeout 10s, output 1MiB",
		"debug isolates refused",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("show output lacks %q:\n%s", want, stdout)
		}
	}
	_, stdout, _ = runCLI(t, "policy", "show", examplePolicy(t, "psi-sum.json"))
	if !strings.Contains(stdout, "no hardware protection") || !strings.Contains(stdout, "trusts platform key ed25519:") {
		t.Errorf("software class summary:\n%s", stdout)
	}
}

func TestPolicyExpired(t *testing.T) {
	t.Parallel()
	data, _ := os.ReadFile(examplePolicy(t, "psi-sum.json"))
	s := strings.Replace(string(data), `"2030-01-01T00:00:00Z"`, `"2001-01-01T00:00:00Z"`, 1)
	path := filepath.Join(t.TempDir(), "old.json")
	os.WriteFile(path, []byte(s), 0o644)
	code, stdout, stderr := runCLI(t, "policy", "validate", path)
	if code != ExitOK || !strings.HasPrefix(stdout, "valid: psi-sum ") || !strings.Contains(stderr, "expired at 2001-01-01T00:00:00Z") {
		t.Fatalf("validate expired: exit %d\n%s%s", code, stdout, stderr)
	}
	_, stdout, _ = runCLI(t, "policy", "show", path)
	if !strings.Contains(stdout, "EXPIRED") {
		t.Fatalf("show does not say EXPIRED:\n%s", stdout)
	}
}
