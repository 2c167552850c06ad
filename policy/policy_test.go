package policy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/keys"
)

// testKeys are fixed, so that documents and their hashes are reproducible;
// tests run in parallel, hence the lock.
var (
	testKeysMu sync.Mutex
	testKeys   = map[string]*keys.PrivateKey{}
)

func key(t testing.TB, name string) *keys.PrivateKey {
	t.Helper()
	testKeysMu.Lock()
	defer testKeysMu.Unlock()
	if k, ok := testKeys[name]; ok {
		return k
	}
	seed := make([]byte, 32)
	copy(seed, name)
	seed2 := bytes.Clone(seed)
	seed2[31] = 1
	k, err := keys.FromSeeds(seed, seed2)
	if err != nil {
		t.Fatal(err)
	}
	testKeys[name] = k
	return k
}

const psiSHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// psiDoc is the three-party example as a Go value, so tests can change one
// field at a time.
func psiDoc(t testing.TB) map[string]any {
	t.Helper()
	pk := func(n string) keys.PublicKey { return key(t, n).Public() }
	return map[string]any{
		"version": 1,
		"name":    "psi-sum",
		"principals": []any{
			map[string]any{"id": "alice", "signing_key": pk("alice").SigningString(), "roles": []any{"program-provider"}},
			map[string]any{"id": "bob", "signing_key": pk("bob").SigningString(), "sealing_key": pk("bob").SealingString(), "roles": []any{"data-provider", "result-reader"}},
			map[string]any{"id": "carol", "signing_key": pk("carol").SigningString(), "roles": []any{"data-provider"}},
		},
		"programs": []any{map[string]any{"name": "psi.wasm", "sha256": psiSHA, "provider": "alice"}},
		"inputs": []any{
			map[string]any{"name": "bob.csv", "provider": "bob"},
			map[string]any{"name": "carol.csv", "provider": "carol"},
		},
		"outputs":       []any{map[string]any{"name": "sum.json", "readers": []any{"bob"}}},
		"isolates":      []any{map[string]any{"class": "software", "platform_keys": []any{pk("node").SigningString()}}},
		"limits":        map[string]any{"memory": "64MiB", "timeout": "10s", "max_output": "1MiB"},
		"deterministic": true,
		"replicas":      1,
		"expires":       "2030-01-01T00:00:00Z",
	}
}

func encode(t testing.TB, doc any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustParse(t testing.TB, doc any) *Policy {
	t.Helper()
	p, err := Parse(encode(t, doc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func TestParseValid(t *testing.T) {
	t.Parallel()
	p := mustParse(t, psiDoc(t))
	if p.Name != "psi-sum" || len(p.Principals) != 3 || !p.Deterministic || p.Replicas != 1 {
		t.Fatalf("parsed %+v", p)
	}
	if want := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC); !p.Expires.Equal(want) {
		t.Fatalf("expires %v", p.Expires)
	}
	if p.Limits.MemoryBytes() != 64<<20 || p.Limits.TimeoutDuration() != 10*time.Second || p.Limits.MaxOutputBytes() != 1<<20 {
		t.Fatalf("limits %+v", p.Limits)
	}
	if id, ok := p.ProgramProvider("psi.wasm"); !ok || id != "alice" {
		t.Fatalf("ProgramProvider = %q %v", id, ok)
	}
	if id, ok := p.InputProvider("carol.csv"); !ok || id != "carol" {
		t.Fatalf("InputProvider = %q %v", id, ok)
	}
	if r, ok := p.OutputReaders("sum.json"); !ok || len(r) != 1 || r[0] != "bob" {
		t.Fatalf("OutputReaders = %v %v", r, ok)
	}
	if _, ok := p.ProgramProvider("other.wasm"); ok {
		t.Fatal("unknown program has a provider")
	}
	if !p.MayRead("bob", "sum.json") || p.MayRead("carol", "sum.json") || p.MayRead("bob", "nope") {
		t.Fatal("MayRead wrong")
	}
	pr, ok := p.PrincipalBySigningKey(key(t, "carol").Public().Signing)
	if !ok || pr.ID != "carol" || !pr.Has(RoleDataProvider) || pr.Has(RoleResultReader) {
		t.Fatalf("PrincipalBySigningKey = %+v %v", pr, ok)
	}
	if _, ok := p.PrincipalBySigningKey(key(t, "mallory").Public().Signing); ok {
		t.Fatal("unknown key matched a principal")
	}
	h, ok := p.ProgramSHA256("psi.wasm")
	if !ok || fmt.Sprintf("%x", h) != psiSHA {
		t.Fatal("ProgramSHA256")
	}
	if !p.Expired(p.Expires) || p.Expired(p.Expires.Add(-time.Nanosecond)) {
		t.Fatal("Expired boundary wrong: the expiry instant itself is expired")
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	d := psiDoc(t)
	delete(d, "replicas")
	delete(d, "limits")
	delete(d, "deterministic")
	delete(d, "inputs")
	d["principals"].([]any)[2].(map[string]any)["roles"] = []any{} // carol: no role left
	p := mustParse(t, d)
	if p.Replicas != 1 || p.ReplicaCount() != 1 {
		t.Fatalf("replicas %d", p.Replicas)
	}
	if p.Limits.MemoryBytes() != DefaultMemory || p.Limits.TimeoutDuration() != DefaultTimeout || p.Limits.MaxOutputBytes() != DefaultMaxOutput {
		t.Fatal("default limits")
	}
	if p.Engine != "" {
		t.Fatalf("engine %q, want none (the node's choice)", p.Engine)
	}
	for _, e := range Engines {
		d["engine"] = e
		if p := mustParse(t, d); p.Engine != e {
			t.Fatalf("engine %q parsed as %q", e, p.Engine)
		}
	}
}

// problemsOf parses doc and returns its problems as "field: message" lines.
func problemsOf(t *testing.T, data []byte) []Problem {
	t.Helper()
	_, err := Parse(data)
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want *ValidationError", err)
	}
	return ve.Problems
}

func hasProblem(ps []Problem, field, fragment string) bool {
	for _, p := range ps {
		if p.Field == field && strings.Contains(p.Message, fragment) {
			return true
		}
	}
	return false
}

// Each case breaks one rule; the problem must name the field and say what
// is wrong.
func TestValidationRules(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		mutate   func(d map[string]any)
		field    string
		fragment string
	}{
		{"version", func(d map[string]any) { d["version"] = 2 }, "version", "must be 1"},
		{"version missing", func(d map[string]any) { delete(d, "version") }, "version", "required"},
		{"version float", func(d map[string]any) { d["version"] = 1.5 }, "version", "not an integer"},
		{"version string", func(d map[string]any) { d["version"] = "1" }, "version", "expected an integer, got a string"},
		{"name empty", func(d map[string]any) { d["name"] = "" }, "name", "must not be empty"},
		{"name control", func(d map[string]any) { d["name"] = "a\nb" }, "name", "control character"},
		{"unknown field", func(d map[string]any) { d["ledger"] = true }, "ledger", "unknown field"},
		{"case-folded field", func(d map[string]any) { d["Name2"] = 1 }, "Name2", "unknown field"},
		{"misspelt nested", func(d map[string]any) { pr(d, 0)["signingKey"] = "x" }, "principals[0].signingKey", `did you mean "signing_key"`},
		{"principal id dup", func(d map[string]any) { pr(d, 2)["id"] = "bob" }, "principals[2].id", "unique"},
		{"principal id empty", func(d map[string]any) { pr(d, 2)["id"] = "" }, "principals[2].id", "must not be empty"},
		{"principal id charset", func(d map[string]any) { pr(d, 2)["id"] = "car ol" }, "principals[2].id", "only letters"},
		{"signing key garbage", func(d map[string]any) { pr(d, 1)["signing_key"] = "ed25519:AAAA" }, "principals[1].signing_key", "not an ed25519 key"},
		{"signing key prefix", func(d map[string]any) { pr(d, 1)["signing_key"] = "ssh-ed25519 AAAA" }, "principals[1].signing_key", "must start with"},
		{"signing key shared", func(d map[string]any) { pr(d, 2)["signing_key"] = pr(d, 1)["signing_key"] }, "principals[2].signing_key", `same key as principal "bob"`},
		{"sealing key garbage", func(d map[string]any) { pr(d, 1)["sealing_key"] = "hpke:AAAA" }, "principals[1].sealing_key", "not an hpke key"},
		{"reader without sealing key", func(d map[string]any) { delete(pr(d, 1), "sealing_key") }, "principals[1].sealing_key", "required for a result-reader"},
		{"unknown role", func(d map[string]any) { pr(d, 0)["roles"] = []any{"admin"} }, "principals[0].roles[0]", `unknown role "admin"`},
		{"dup role", func(d map[string]any) { pr(d, 0)["roles"] = []any{"program-provider", "program-provider"} }, "principals[0].roles[1]", "twice"},
		{"roles missing", func(d map[string]any) { delete(pr(d, 0), "roles") }, "principals[0].roles", "required"},
		{"no principals", func(d map[string]any) { d["principals"] = []any{} }, "principals", "at least one"},
		{"host call name", func(d map[string]any) { d["host_calls"] = []any{map[string]any{"name": "Echo"}} }, "host_calls[0].name", "dotted lower-case"},
		{"unknown engine", func(d map[string]any) { d["engine"] = "v8" }, "engine", `"v8" is not an engine`},
		{"host call twice", func(d map[string]any) {
			d["host_calls"] = []any{map[string]any{"name": "cloister.echo/v1"}, map[string]any{"name": "cloister.echo/v1"}}
		}, "host_calls[1].name", "twice"},
		{"host call field", func(d map[string]any) { d["host_calls"] = []any{map[string]any{"nam": "x/v1"}} }, "host_calls[0].nam", "unknown field"},
		{"no programs", func(d map[string]any) { d["programs"] = []any{} }, "programs", "at least one"},
		{"program hash short", func(d map[string]any) { pg(d)["sha256"] = "abcd" }, "programs[0].sha256", "64 lowercase hex"},
		{"program hash upper", func(d map[string]any) { pg(d)["sha256"] = strings.ToUpper(psiSHA) }, "programs[0].sha256", "64 lowercase hex"},
		{"program provider unknown", func(d map[string]any) { pg(d)["provider"] = "dave" }, "programs[0].provider", `no principal has id "dave"`},
		{"program provider role", func(d map[string]any) { pg(d)["provider"] = "bob" }, "programs[0].provider", "lacks the program-provider role"},
		{"program name slash", func(d map[string]any) { pg(d)["name"] = "../psi.wasm" }, "programs[0].name", "plain file name"},
		{"program name dotdot", func(d map[string]any) { pg(d)["name"] = ".." }, "programs[0].name", "not a file name"},
		{"program name NUL", func(d map[string]any) { pg(d)["name"] = "a\x00b" }, "programs[0].name", "control character"},
		{"input name dup", func(d map[string]any) { in(d, 1)["name"] = "bob.csv" }, "inputs[1].name", "used twice"},
		{"input provider role", func(d map[string]any) { in(d, 0)["provider"] = "alice" }, "inputs[0].provider", "lacks the data-provider role"},
		{"input name empty", func(d map[string]any) { in(d, 0)["name"] = "" }, "inputs[0].name", "must not be empty"},
		{"no outputs", func(d map[string]any) { d["outputs"] = []any{} }, "outputs", "at least one"},
		{"output no readers", func(d map[string]any) { out(d)["readers"] = []any{} }, "outputs[0].readers", "at least one"},
		{"output reader unknown", func(d map[string]any) { out(d)["readers"] = []any{"eve"} }, "outputs[0].readers[0]", `no principal has id "eve"`},
		{"output reader role", func(d map[string]any) { out(d)["readers"] = []any{"carol"} }, "outputs[0].readers[0]", "lacks the result-reader role"},
		{"output reader dup", func(d map[string]any) { out(d)["readers"] = []any{"bob", "bob"} }, "outputs[0].readers[1]", "twice"},
		{"no isolates", func(d map[string]any) { d["isolates"] = []any{} }, "isolates", "at least one"},
		{"unknown class", func(d map[string]any) { iso(d)["class"] = "sev" }, "isolates[0].class", `unknown class "sev"`},
		{"software without keys", func(d map[string]any) { delete(iso(d), "platform_keys") }, "isolates[0].platform_keys", "at least one platform key"},
		{"software bad key", func(d map[string]any) { iso(d)["platform_keys"] = []any{"ed25519:xx"} }, "isolates[0].platform_keys[0]", "not an ed25519 key"},
		{"hardware without measurements", func(d map[string]any) { d["isolates"] = []any{map[string]any{"class": "sev-snp"}} }, "isolates[0].measurements", "at least one allowed measurement"},
		{"measurement length", func(d map[string]any) {
			d["isolates"] = []any{map[string]any{"class": "sev-snp", "measurements": []any{psiSHA}}}
		}, "isolates[0].measurements[0]", "96 lowercase hex"},
		{"class twice", func(d map[string]any) { d["isolates"] = append(d["isolates"].([]any), iso(d)) }, "isolates[1].class", "listed twice"},
		{"hardware pinned key", func(d map[string]any) {
			d["isolates"] = []any{map[string]any{"class": "tdx", "measurements": []any{strings.Repeat("ab", 48)}, "platform_keys": []any{key(t, "n").Public().SigningString()}}}
		}, "isolates[0].platform_keys", "use roots"},
		{"memory unit", func(d map[string]any) { lim(d)["memory"] = "256 MiB" }, "limits.memory", "integer and a unit"},
		{"memory too big", func(d map[string]any) { lim(d)["memory"] = "8GiB" }, "limits.memory", "4 GiB"},
		{"timeout", func(d map[string]any) { lim(d)["timeout"] = "soon" }, "limits.timeout", "not a duration"},
		{"timeout negative", func(d map[string]any) { lim(d)["timeout"] = "-1s" }, "limits.timeout", "positive"},
		{"max_output", func(d map[string]any) { lim(d)["max_output"] = "lots" }, "limits.max_output", "integer and a unit"},
		{"limits unknown", func(d map[string]any) { lim(d)["cpu"] = "1" }, "limits.cpu", "unknown field"},
		{"replicas zero", func(d map[string]any) { d["replicas"] = 0 }, "replicas", "at least 1"},
		{"replicas negative", func(d map[string]any) { d["replicas"] = -2 }, "replicas", "at least 1"},
		{"replicas huge", func(d map[string]any) { d["replicas"] = 1000 }, "replicas", "at most"},
		{"replicas not deterministic", func(d map[string]any) { d["replicas"] = 3; d["deterministic"] = false }, "replicas", "deterministic"},
		{"replicas with host calls", func(d map[string]any) {
			d["replicas"] = 2
			d["host_calls"] = []any{map[string]any{"name": "cloister.model.call/v1"}}
		}, "replicas", "host calls"},
		{"replica_classes unknown", func(d map[string]any) { d["replicas"] = 2; d["replica_classes"] = "same" }, "replica_classes", "distinct"},
		{"replica_classes alone", func(d map[string]any) { d["replica_classes"] = "distinct" }, "replica_classes", "replicated runs only"},
		{"replica_classes too few", func(d map[string]any) { d["replicas"] = 2; d["replica_classes"] = "distinct" }, "replica_classes", "an isolate class per replica"},
		{"expires missing", func(d map[string]any) { delete(d, "expires") }, "expires", "required"},
		{"expires format", func(d map[string]any) { d["expires"] = "2030-01-01" }, "expires", "RFC 3339"},
		{"svn beyond 2^53", func(d map[string]any) {
			d["isolates"] = []any{map[string]any{"class": "sev-snp", "measurements": []any{strings.Repeat("ab", 48)}, "min_svn": map[string]any{"snp": json.Number("9007199254740993")}}}
		}, "isolates[0].min_svn.snp", "2^53"},
		{"svn negative", func(d map[string]any) {
			d["isolates"] = []any{map[string]any{"class": "sev-snp", "measurements": []any{strings.Repeat("ab", 48)}, "min_svn": map[string]any{"snp": -1}}}
		}, "isolates[0].min_svn.snp", "negative"},
		{"deterministic type", func(d map[string]any) { d["deterministic"] = "yes" }, "deterministic", "expected true or false"},
		{"null principal", func(d map[string]any) { d["principals"].([]any)[0] = nil }, "principals[0]", "expected an object, got a null"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := psiDoc(t)
			c.mutate(d)
			ps := problemsOf(t, encode(t, d))
			if !hasProblem(ps, c.field, c.fragment) {
				t.Fatalf("no problem %s: …%s…; got %v", c.field, c.fragment, ps)
			}
		})
	}
}

func pr(d map[string]any, i int) map[string]any { return d["principals"].([]any)[i].(map[string]any) }
func pg(d map[string]any) map[string]any        { return d["programs"].([]any)[0].(map[string]any) }
func in(d map[string]any, i int) map[string]any { return d["inputs"].([]any)[i].(map[string]any) }
func out(d map[string]any) map[string]any       { return d["outputs"].([]any)[0].(map[string]any) }
func iso(d map[string]any) map[string]any       { return d["isolates"].([]any)[0].(map[string]any) }
func lim(d map[string]any) map[string]any       { return d["limits"].(map[string]any) }

// A document with several faults reports all of them, each once.
func TestEveryProblemListed(t *testing.T) {
	t.Parallel()
	d := psiDoc(t)
	d["version"] = 3
	pr(d, 1)["signing_key"] = "nope"
	pg(d)["sha256"] = "x"
	lim(d)["memory"] = "huge"
	delete(d, "expires")
	d["extra"] = 1
	ps := problemsOf(t, encode(t, d))
	want := []string{"version", "principals[1].signing_key", "programs[0].sha256", "limits.memory", "expires", "extra"}
	for _, f := range want {
		if !hasProblem(ps, f, "") {
			t.Errorf("missing problem for %s", f)
		}
	}
	if len(ps) != len(want) {
		t.Errorf("%d problems, want %d: %v", len(ps), len(want), ps)
	}
}

func TestSyntaxErrors(t *testing.T) {
	t.Parallel()
	good := encode(t, psiDoc(t))
	for name, data := range map[string][]byte{
		"trailing data": append(bytes.Clone(good), []byte(" {}")...),
		"not json":      []byte("version: 1"),
		"truncated":     good[:len(good)/2],
		"invalid utf8":  bytes.Replace(good, []byte("psi-sum"), []byte("psi\xff"), 1),
		"empty":         nil,
	} {
		if _, err := Parse(data); !errors.Is(err, ErrSyntax) {
			t.Errorf("%s: err = %v, want ErrSyntax", name, err)
		}
	}
	// Duplicate keys are a policy problem with a field path.
	dup := bytes.Replace(good, []byte(`"name": "psi-sum"`), []byte(`"name": "psi-sum", "name": "other"`), 1)
	if ps := problemsOf(t, dup); !hasProblem(ps, "name", "appears twice") {
		t.Fatalf("duplicate key: %v", ps)
	}
	if ps := problemsOf(t, []byte(`[1]`)); !hasProblem(ps, "(document)", "expected an object") {
		t.Fatalf("array document: %v", ps)
	}
}

func TestHashIgnoresFormatting(t *testing.T) {
	t.Parallel()
	d := psiDoc(t)
	a := mustParse(t, d)
	compact, _ := json.Marshal(d)
	b, err := Parse(compact)
	if err != nil {
		t.Fatal(err)
	}
	// Reverse key order and escape some characters, as a hand-edited file
	// might.
	reordered := []byte(reverseTopLevel(t, compact))
	reordered = bytes.Replace(reordered, []byte(`"psi-sum"`), []byte(`"\u0070si\u002dsum"`), 1)
	reordered = bytes.Replace(reordered, []byte(`"2030-01-01T00:00:00Z"`), []byte(`"2030-01-01T00:00:00Z"`+"\n\t "), 1)
	c, err := Parse(reordered)
	if err != nil {
		t.Fatal(err)
	}
	if a.HashHex() != b.HashHex() || a.HashHex() != c.HashHex() {
		t.Fatalf("hash depends on formatting: %s %s %s", a.HashHex(), b.HashHex(), c.HashHex())
	}
	if !bytes.Equal(a.Canonical(), c.Canonical()) {
		t.Fatal("canonical forms differ")
	}
}

func reverseTopLevel(t *testing.T, compact []byte) string {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(compact, &m); err != nil {
		t.Fatal(err)
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%q : %s", k, v))
	}
	// Map iteration order is random; sort descending to be sure the order
	// differs from the canonical ascending one.
	for i := range parts {
		for j := i + 1; j < len(parts); j++ {
			if parts[j] > parts[i] {
				parts[i], parts[j] = parts[j], parts[i]
			}
		}
	}
	return "{\n  " + strings.Join(parts, ",\n  ") + "\n}\n"
}

// Any one-field change of meaning changes the hash.
func TestHashChangesWithMeaning(t *testing.T) {
	t.Parallel()
	base := mustParse(t, psiDoc(t)).HashHex()
	changes := map[string]func(d map[string]any){
		"name":          func(d map[string]any) { d["name"] = "psi-sum2" },
		"deterministic": func(d map[string]any) { d["deterministic"] = false },
		"replicas":      func(d map[string]any) { d["replicas"] = 2 },
		"expires":       func(d map[string]any) { d["expires"] = "2030-01-01T00:00:01Z" },
		"memory":        func(d map[string]any) { lim(d)["memory"] = "65MiB" },
		"program hash":  func(d map[string]any) { pg(d)["sha256"] = strings.Repeat("0", 64) },
		"reader": func(d map[string]any) {
			pr(d, 0)["roles"] = []any{"program-provider", "result-reader"}
			pr(d, 0)["sealing_key"] = key(t, "alice").Public().SealingString()
			out(d)["readers"] = []any{"bob", "alice"}
		},
		"role order":   func(d map[string]any) { pr(d, 1)["roles"] = []any{"result-reader", "data-provider"} },
		"input order":  func(d map[string]any) { d["inputs"] = []any{in(d, 1), in(d, 0)} },
		"platform key": func(d map[string]any) { iso(d)["platform_keys"] = []any{key(t, "node2").Public().SigningString()} },
		"allow_debug":  func(d map[string]any) { iso(d)["allow_debug"] = true },
		"principal id": func(d map[string]any) { pr(d, 2)["id"] = "carol2"; in(d, 1)["provider"] = "carol2" },
	}
	seen := map[string]string{base: "base"}
	for name, ch := range changes {
		d := psiDoc(t)
		ch(d)
		h := mustParse(t, d).HashHex()
		if prev, dup := seen[h]; dup {
			t.Errorf("%s: same hash as %s", name, prev)
		}
		seen[h] = name
	}
}

// The hash of a fixed document is pinned, so that an accidental change to
// canonicalization (which would break every deployed policy) fails here.
// Keys come from fixed seeds, so the document is the same on every run.
func TestHashPinned(t *testing.T) {
	t.Parallel()
	p := mustParse(t, psiDoc(t))
	const want = "6dabf804a5a8e4b0bf70c7cc2075ad028710da0bdcc3e97dc6ce37bd4c8e3a67"
	if got := p.HashHex(); got != want {
		t.Fatalf("hash of the psi document is %s, pinned %s", got, want)
	}
	c := string(p.Canonical())
	if !strings.HasPrefix(c, `{"deterministic":true,"expires":"2030-01-01T00:00:00Z","inputs":[{"name":"bob.csv","provider":"bob"},`) {
		t.Fatalf("canonical form starts %.100s", c)
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "p.json")
	os.WriteFile(path, encode(t, psiDoc(t)), 0o644)
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "psi-sum" {
		t.Fatal(p.Name)
	}
	if _, err := Load(filepath.Join(dir, "missing.json")); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Fatalf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big.json")
	os.WriteFile(big, bytes.Repeat([]byte(" "), MaxFileSize+10), 0o644)
	if _, err := Load(big); !errors.Is(err, ErrSyntax) {
		t.Fatalf("oversized: %v", err)
	}
}

func TestReferenceValues(t *testing.T) {
	t.Parallel()
	d := psiDoc(t)
	snpM := strings.Repeat("a1", 48)
	d["isolates"] = append(d["isolates"].([]any), map[string]any{
		"class": "sev-snp", "measurements": []any{snpM},
		"min_svn": map[string]any{"snp": 8, "microcode": 115}, "accept_tcb_status": []any{"UpToDate"},
	})
	p := mustParse(t, d)
	ref, opts, err := p.ReferenceValues(attest.ClassSoftware)
	if err != nil {
		t.Fatal(err)
	}
	if ref.RequireHardware || ref.AllowDebug || len(opts.TrustedKeys) != 1 {
		t.Fatalf("software: %+v %+v", ref, opts)
	}
	if !opts.TrustedKeys[0].(ed25519.PublicKey).Equal(key(t, "node").Public().Signing) {
		t.Fatal("software trusted key is not the node's platform key")
	}
	ref, opts, err = p.ReferenceValues(attest.ClassSEVSNP)
	if err != nil {
		t.Fatal(err)
	}
	if !ref.RequireHardware || len(ref.Measurements) != 1 || fmt.Sprintf("%x", ref.Measurements[0]) != snpM ||
		ref.MinSVN["snp"] != 8 || ref.MinSVN["microcode"] != 115 || ref.AcceptTCBStatus[0] != "UpToDate" || len(opts.TrustedKeys) != 0 {
		t.Fatalf("sev-snp: %+v %+v", ref, opts)
	}
	if _, _, err := p.ReferenceValues(attest.ClassTDX); err == nil || !strings.Contains(err.Error(), "does not accept") {
		t.Fatalf("tdx: %v", err)
	}
	// A measurement from the policy is accepted by attest.Validate and
	// another is refused: the mapping is what the verifier sees.
	vmpl0 := uint32(0)
	claims := &attest.Claims{Class: attest.ClassSEVSNP, HardwareProtected: true, Measurement: ref.Measurements[0], SVN: map[string]uint64{"snp": 8, "microcode": 115}, TCBStatus: "UpToDate", VMPL: &vmpl0}
	if err := attest.Validate(claims, ref, time.Now()); err != nil {
		t.Fatalf("matching claims refused: %v", err)
	}
	claims.SVN["snp"] = 7
	if err := attest.Validate(claims, ref, time.Now()); !errors.Is(err, attest.ErrTCB) {
		t.Fatalf("low SVN: %v", err)
	}
}

func TestTPMIsolate(t *testing.T) {
	t.Parallel()
	ak, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&ak.PublicKey)
	akPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	pcr := strings.Repeat("0c", 32)
	d := psiDoc(t)
	d["isolates"] = []any{map[string]any{"class": "tpm", "measurements": []any{pcr}, "platform_keys": []any{akPEM}}}
	p := mustParse(t, d)
	ref, opts, err := p.ReferenceValues(attest.ClassTPM)
	if err != nil {
		t.Fatal(err)
	}
	// A TPM proves what booted, not that memory is hidden: the tpm
	// verifier reports HardwareProtected false, so requiring hardware would
	// refuse every TPM session.
	if ref.RequireHardware || len(opts.TrustedKeys) != 1 || !opts.TrustedKeys[0].(*ecdsa.PublicKey).Equal(&ak.PublicKey) {
		t.Fatalf("tpm: %+v %+v", ref, opts)
	}
	for name, c := range map[string]struct {
		iso      map[string]any
		field    string
		fragment string
	}{
		"no trust anchor": {map[string]any{"class": "tpm", "measurements": []any{pcr}}, "isolates[0].platform_keys", "needs attestation keys"},
		"ed25519 AK":      {map[string]any{"class": "tpm", "measurements": []any{pcr}, "platform_keys": []any{key(t, "n").Public().SigningString()}}, "isolates[0].platform_keys[0]", "PEM PUBLIC KEY"},
		"garbage root":    {map[string]any{"class": "tpm", "measurements": []any{pcr}, "roots": []any{"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}}, "isolates[0].roots[0]", ""},
	} {
		d := psiDoc(t)
		d["isolates"] = []any{c.iso}
		if ps := problemsOf(t, encode(t, d)); !hasProblem(ps, c.field, c.fragment) {
			t.Errorf("%s: %v", name, ps)
		}
	}
	for _, class := range []attest.Class{attest.ClassSEVSNP, attest.ClassTDX, attest.ClassSGX, attest.ClassNitro} {
		d := psiDoc(t)
		n := map[attest.Class]int{attest.ClassSGX: 32}[class]
		if n == 0 {
			n = 48
		}
		d["isolates"] = []any{map[string]any{"class": string(class), "measurements": []any{strings.Repeat("ab", n)}}}
		ref, _, err := mustParse(t, d).ReferenceValues(class)
		if err != nil || !ref.RequireHardware {
			t.Errorf("%s: RequireHardware %v, %v", class, ref.RequireHardware, err)
		}
	}
}

func TestBuiltPolicyCanonical(t *testing.T) {
	t.Parallel()
	p := mustParse(t, psiDoc(t))
	q := *p
	q.canonical = nil
	if err := q.Validate(); err != nil {
		t.Fatal(err)
	}
	// A policy built in code hashes its own serialization; re-parsing that
	// serialization gives the same hash.
	r, err := Parse(q.Canonical())
	if err != nil {
		t.Fatalf("re-parsing the serialization of a built policy: %v", err)
	}
	if r.HashHex() != q.HashHex() {
		t.Fatal("built policy hash differs from its re-parsed hash")
	}
}

// A minimal policy built in code (nil inputs, zero limits, no roles for a
// principal, replicas unset) serializes to a document that parses back to
// the same hash.
func TestMinimalBuiltPolicyRoundTrip(t *testing.T) {
	t.Parallel()
	p := &Policy{
		Version: 1,
		Name:    "built",
		Principals: []Principal{
			{ID: "a", SigningKey: key(t, "a").Public().SigningString(), Roles: []Role{RoleProgramProvider, RoleResultReader}, SealingKey: key(t, "a").Public().SealingString()},
			{ID: "auditor", SigningKey: key(t, "auditor").Public().SigningString()},
		},
		Programs: []Program{{Name: "p.wasm", SHA256: psiSHA, Provider: "a"}},
		Outputs:  []Output{{Name: "o", Readers: []string{"a"}}},
		Isolates: []Isolate{{Class: "software", PlatformKeys: []string{key(t, "node").Public().SigningString()}}},
		Expires:  time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	q, err := Parse(p.Canonical())
	if err != nil {
		t.Fatalf("re-parsing %s: %v", p.Canonical(), err)
	}
	if q.HashHex() != p.HashHex() || q.ReplicaCount() != 1 || len(q.Inputs) != 0 {
		t.Fatalf("round trip changed the policy: %s", q.Canonical())
	}
}
