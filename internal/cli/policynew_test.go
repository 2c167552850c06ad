package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/policy"
)

// newPolicyKeys makes key files for ids in dir.
func newPolicyKeys(t *testing.T, dir string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		mustCLI(t, "key", "new", "--out", filepath.Join(dir, id+".key"))
	}
}

// TestPolicyNewFromFlags: the README's policy, from flags: roles follow
// from what each principal does, only readers carry a sealing key, the
// hash printed is the file's, and the file validates.
func TestPolicyNewFromFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	newPolicyKeys(t, dir, "alice", "bob", "carol", "dave", "node")
	// carol sends only her public keys, as text; dave as JSON.
	os.WriteFile(at("carol.pub"), []byte(mustCLI(t, "key", "public", at("carol.key"))), 0o644)
	os.WriteFile(at("dave.json"), []byte(mustCLI(t, "key", "public", at("dave.key"), "--json")), 0o644)
	code, out, stderr := runCLI(t, "policy", "new", "--out", at("psi.json"), "--platform-key", at("node.key"),
		"--principal", at("alice.key"), "--principal", "bob="+at("bob.key"), "--principal", at("carol.pub"), "--principal", "dave="+at("dave.json"),
		"--program", "alice:psi-sum.wasm=../../examples/psi-sum/psi-sum.wasm",
		"--input", "bob:customers.csv", "--input", "carol:purchases.csv", "--output", "dave:result.json",
		"--memory", "64MiB", "--timeout", "10s", "--max-output", "1MiB", "--expires", "2030-01-01T00:00:00Z")
	if code != 0 {
		t.Fatalf("policy new: exit %d: %s", code, stderr)
	}
	p, err := policy.Load(at("psi.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != p.HashHex() {
		t.Errorf("printed %q, the file's hash is %s", out, p.HashHex())
	}
	if !strings.Contains(stderr, `wrote `+at("psi.json")+`: policy "psi-sum" for alice, bob, carol, dave`) {
		t.Errorf("stderr %q", stderr)
	}
	// The same contract as the example, but for these keys.
	ex, err := policy.Load("../../examples/policies/psi-sum.json")
	if err != nil {
		t.Fatal(err)
	}
	for i, pr := range p.Principals {
		want := ex.Principals[i]
		if pr.ID != want.ID || !slices.Equal(pr.Roles, want.Roles) || (pr.SealingKey != "") != (want.SealingKey != "") {
			t.Errorf("principal %d: %+v, want id, roles and sealing key as %+v", i, pr, want)
		}
	}
	if !slices.Equal(p.Programs, ex.Programs) || !slices.EqualFunc(p.Inputs, ex.Inputs, func(a, b policy.Input) bool { return a.Name == b.Name && a.Provider == b.Provider }) ||
		len(p.Outputs) != 1 || !slices.Equal(p.Outputs[0].Readers, ex.Outputs[0].Readers) || p.Limits != ex.Limits || !p.Expires.Equal(ex.Expires) || !p.Deterministic {
		t.Errorf("policy %+v differs from the example %+v", p, ex)
	}
	nodePub, _ := publicKeys(t, at("node.key"))
	if len(p.Isolates) != 1 || p.Isolates[0].Class != "software" || !slices.Equal(p.Isolates[0].PlatformKeys, []string{nodePub}) {
		t.Errorf("isolates %+v, want software with %s", p.Isolates, nodePub)
	}
	// Never overwritten without --force.
	code, _, stderr = runCLI(t, "policy", "new", "--out", at("psi.json"), "--platform-key", at("node.key"), "--principal", at("alice.key"),
		"--program", "alice:p.wasm=sha256:"+strings.Repeat("0", 64), "--output", "alice:o")
	if code != 1 || !strings.Contains(stderr, "already exists") {
		t.Errorf("overwrite: exit %d, %q", code, stderr)
	}
	if q, _ := policy.Load(at("psi.json")); q == nil || q.HashHex() != p.HashHex() {
		t.Error("the policy file changed")
	}
	mustCLI(t, "policy", "new", "--force", "--out", at("psi.json"), "--platform-key", at("node.key"), "--principal", at("alice.key"),
		"--program", "alice:p.wasm=sha256:"+strings.Repeat("0", 64), "--output", "alice:o", "--expires", "12h")
	q, err := policy.Load(at("psi.json"))
	if err != nil || q.Name != "p" || time.Until(q.Expires) > 12*time.Hour || time.Until(q.Expires) < 11*time.Hour {
		t.Errorf("--force, --expires 12h: %+v %v", q, err)
	}
}

// TestPolicyNewMistakes: each mistake is named with what to do, and
// nothing is written.
func TestPolicyNewMistakes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	newPolicyKeys(t, dir, "alice", "node")
	os.WriteFile(at("alice.sign"), []byte(strings.SplitN(mustCLI(t, "key", "public", at("alice.key")), "\n", 2)[0]+"\n"), 0o644)
	base := []string{"policy", "new", "--out", at("p.json"), "--platform-key", at("node.key"), "--principal", at("alice.key")}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--program", "bob:p.wasm=sha256:" + strings.Repeat("0", 64), "--output", "alice:o"}, 2, "bob is not a principal; add --principal bob=bob.key"},
		{[]string{"--program", "alice:p.wasm", "--output", "alice:o"}, 2, "want PROVIDER:NAME=FILE"},
		{[]string{"--program", "alice:p.wasm=missing.wasm", "--output", "alice:o"}, 2, "missing.wasm"},
		{[]string{"--program", "alice:p.wasm=sha256:ABC", "--output", "alice:o"}, 2, "64 lowercase hex digits"},
		{[]string{"--program", "alice:p.wasm=sha256:" + strings.Repeat("0", 64), "--output", "o"}, 2, "want READER:NAME"},
		{[]string{"--program", "alice:p.wasm=sha256:" + strings.Repeat("0", 64), "--output", "alice:o", "--memory", "64 MiB", "--timeout", "1y"}, 1,
			"the policy would break 2 rule(s); nothing was written:\n  limits.memory"},
		{[]string{"--program", "alice:p.wasm=sha256:" + strings.Repeat("0", 64), "--output", "alice:o", "--expires", "soon"}, 2, "or a duration such as 30d"},
		{[]string{"--program", "alice:p.wasm=sha256:" + strings.Repeat("0", 64), "--input", "x.bin", "--output", "alice:o"}, 2, "want PROVIDER:NAME for an uploaded input"},
	} {
		code, _, stderr := runCLI(t, append(slices.Clone(base), c.args...)...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d %q, want %d and %q", c.args, code, stderr, c.code, c.want)
		}
	}
	// A reader without a sealing key; no node key at all.
	code, _, stderr := runCLI(t, "policy", "new", "--out", at("p.json"), "--platform-key", at("node.key"), "--principal", "alice="+at("alice.sign"),
		"--program", "alice:p.wasm=sha256:"+strings.Repeat("0", 64), "--output", "alice:o")
	if code != 2 || !strings.Contains(stderr, "alice reads it, so needs a sealing key") {
		t.Errorf("reader without a sealing key: exit %d %q", code, stderr)
	}
	code, _, stderr = runCLI(t, "policy", "new", "--out", at("p.json"), "--principal", at("alice.key"),
		"--program", "alice:p.wasm=sha256:"+strings.Repeat("0", 64), "--output", "alice:o")
	if code != 2 || !strings.Contains(stderr, "which nodes may run it? give --node-data DIR") {
		t.Errorf("no platform key: exit %d %q", code, stderr)
	}
	code, _, stderr = runCLI(t, "policy", "new", "--out", at("p.json"), "--node-data", dir, "--principal", at("alice.key"),
		"--program", "alice:p.wasm=sha256:"+strings.Repeat("0", 64), "--output", "alice:o")
	if code != 2 || !strings.Contains(stderr, "no platform.key: is it a node's data directory?") {
		t.Errorf("--node-data of no node: exit %d %q", code, stderr)
	}
	if _, err := os.Stat(at("p.json")); err == nil {
		t.Error("a refused policy was written")
	}
	// Not a terminal, no flags: told to give them.
	code, _, stderr = runCLIWithInput(t, strings.NewReader(""), "policy", "new", "--out", at("p.json"))
	if code != 2 || !strings.Contains(stderr, "or run with --interactive") {
		t.Errorf("no flags: exit %d %q", code, stderr)
	}
}

// TestPolicyNewNodeSources: the platform key from a node's data
// directory, from a 'cloister up' directory, from a running node; a stored
// input and a pinned one; a tpm PEM key.
func TestPolicyNewNodeSources(t *testing.T) {
	url, dir := startSessionNode(t)
	at := func(n string) string { return filepath.Join(dir, n) }
	newPolicyKeys(t, dir, "alice")
	platform, _ := publicKeys(t, at("node-data/platform.key"))
	common := []string{"--principal", at("alice.key"), "--program", "alice:p.wasm=sha256:" + strings.Repeat("0", 64), "--output", "alice:o"}
	load := func(name string, args ...string) *policy.Policy {
		t.Helper()
		mustCLI(t, append(append([]string{"policy", "new", "--out", at(name)}, common...), args...)...)
		p, err := policy.Load(at(name))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := load("a.json", "--node-data", at("node-data")); !slices.Equal(p.Isolates[0].PlatformKeys, []string{platform}) {
		t.Errorf("--node-data: %v, want %s", p.Isolates[0].PlatformKeys, platform)
	}
	// A 'cloister up' directory: DIR/up.json and the node in DIR/node.
	up := at("up")
	os.MkdirAll(filepath.Join(up, "node"), 0o700)
	os.WriteFile(filepath.Join(up, upConfigFile), []byte(`{"version":1}`), 0o600)
	b, _ := os.ReadFile(at("node-data/platform.key"))
	os.WriteFile(filepath.Join(up, "node", "platform.key"), b, 0o600)
	if p := load("b.json", "--node-data", up); !slices.Equal(p.Isolates[0].PlatformKeys, []string{platform}) {
		t.Errorf("--node-data of an up directory: %v", p.Isolates[0].PlatformKeys)
	}
	code, _, stderr := runCLI(t, append([]string{"policy", "new", "--out", at("c.json"), "--node", url}, common...)...)
	if code != 0 || !strings.Contains(stderr, "as it says (compare it with its operator's): "+platform) {
		t.Fatalf("--node: exit %d %q", code, stderr)
	}
	if p, _ := policy.Load(at("c.json")); p == nil || !slices.Equal(p.Isolates[0].PlatformKeys, []string{platform}) {
		t.Errorf("--node: %+v", p)
	}
	sum := sha256hex([]byte("weights"))
	os.WriteFile(at("pub.csv"), []byte("public"), 0o644)
	p := load("d.json", "--node-data", at("node-data"), "--input", "alice:pub.csv="+at("pub.csv"),
		"--input", "w.bin=sha256:"+sum+"@http://127.0.0.1:7444/m,http://127.0.0.1:7445/m")
	if len(p.Inputs) != 2 || p.Inputs[0].SHA256 != sha256hex([]byte("public")) || p.Inputs[0].Provider != "alice" ||
		p.Inputs[1].From == nil || p.Inputs[1].From.Digest != "sha256:"+sum || len(p.Inputs[1].From.Stores) != 2 || p.Inputs[1].Provider != "" {
		js, _ := json.Marshal(p.Inputs)
		t.Errorf("inputs %s", js)
	}
	ak, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&ak.PublicKey)
	akPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	os.WriteFile(at("ak.pem"), []byte(akPEM), 0o644)
	code, _, stderr = runCLI(t, append([]string{"policy", "new", "--out", at("e.json"), "--isolate", "tpm", "--platform-key", at("ak.pem"),
		"--measurement", strings.Repeat("ab", 32)}, common...)...)
	if code != 0 {
		t.Fatalf("tpm: exit %d %q", code, stderr)
	}
	if p, _ := policy.Load(at("e.json")); p == nil || p.Isolates[0].Class != "tpm" || p.Isolates[0].PlatformKeys[0] != akPEM {
		t.Errorf("tpm: %+v", p)
	}
}

// TestPolicyNewInteractive: the same policy from answers to the prompts,
// with a wrong answer asked again.
func TestPolicyNewInteractive(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	newPolicyKeys(t, dir, "alice", "bob", "dave", "node")
	answers := strings.Join([]string{
		at("alice.key"), at("bob.key"), at("dave.key"), "",
		"eve:p.wasm=../../examples/psi-sum/psi-sum.wasm", // eve is no principal: asked again
		"alice:psi-sum.wasm=../../examples/psi-sum/psi-sum.wasm", "",
		"bob:customers.csv", "bob:purchases.csv", "",
		"dave:result.json", "",
		"", // software
		at("node.key"),
		"64MiB", "", "", "no", "2030-01-01T00:00:00Z", "",
	}, "\n") + "\n"
	code, out, stderr := runCLIWithInput(t, strings.NewReader(answers), "policy", "new", "--interactive", "--out", at("p.json"))
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "eve is not among the principals given above") {
		t.Errorf("a wrong answer was not refused:\n%s", stderr)
	}
	p, err := policy.Load(at("p.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != p.HashHex() || p.Name != "psi-sum" || len(p.Principals) != 3 || len(p.Inputs) != 2 || p.Limits.Memory != "64MiB" ||
		p.Limits.Timeout != "30s" || p.Deterministic || p.Expires.Year() != 2030 || p.Principals[2].SealingKey == "" {
		t.Errorf("policy %+v", p)
	}
}
