package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/corpus"
	"github.com/cloisterhq/cloister/keys"
)

var updateExamples = flag.Bool("update-examples", false, "rewrite examples/policies/*.json from their templates")

// repoRoot walks up from the package directory to go.mod.
func repoRoot(t *testing.T) string {
	return corpus.ModuleRoot(t)
}

var placeholder = regexp.MustCompile(`"@([A-Za-z0-9_-]+)\.(signing_key|sealing_key)"|"@sha256:([^"]+)"`)

// fillTemplate replaces the placeholders of an example template the way
// examples/policies/fill.sh does: @NAME.signing_key and @NAME.sealing_key
// by NAME's public keys, @sha256:PATH by the hash of the file at PATH
// (relative to the repository root).
func fillTemplate(t *testing.T, root string, tmpl []byte, keyOf func(string) *keys.PrivateKey) []byte {
	t.Helper()
	return placeholder.ReplaceAllFunc(tmpl, func(m []byte) []byte {
		sub := placeholder.FindSubmatch(m)
		if len(sub[3]) > 0 {
			data, err := os.ReadFile(filepath.Join(root, string(sub[3])))
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.Sum256(data)
			return []byte(`"` + hex.EncodeToString(h[:]) + `"`)
		}
		pub := keyOf(string(sub[1])).Public()
		if string(sub[2]) == "signing_key" {
			return []byte(`"` + pub.SigningString() + `"`)
		}
		return []byte(`"` + pub.SealingString() + `"`)
	})
}

// exampleKey derives the published example key of a name. Its private half
// is public knowledge: the committed example policies are for reading and
// trying out, never for real data.
func exampleKey(t *testing.T, name string) *keys.PrivateKey {
	s1 := sha256.Sum256([]byte("cloister example key " + name + " signing"))
	s2 := sha256.Sum256([]byte("cloister example key " + name + " sealing"))
	k, err := keys.FromSeeds(s1[:], s2[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The committed example policies validate as they are, match their
// templates filled with the example keys, and their templates validate when
// filled with anyone's fresh keys.
func TestExamplePolicies(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	dir := filepath.Join(root, "examples", "policies")
	tmpls, err := filepath.Glob(filepath.Join(dir, "*.template.json"))
	if err != nil || len(tmpls) == 0 {
		t.Fatalf("no templates in %s: %v", dir, err)
	}
	for _, tp := range tmpls {
		name := strings.TrimSuffix(filepath.Base(tp), ".template.json")
		t.Run(name, func(t *testing.T) {
			tmpl, err := os.ReadFile(tp)
			if err != nil {
				t.Fatal(err)
			}
			want := fillTemplate(t, root, tmpl, func(n string) *keys.PrivateKey { return exampleKey(t, n) })
			committed := filepath.Join(dir, name+".json")
			if *updateExamples {
				if err := os.WriteFile(committed, want, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(committed)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("%s is out of date with its template or with the program it pins; run: go test ./policy -run TestExamplePolicies -update-examples", committed)
			}
			if _, err := Parse(got); err != nil {
				t.Fatalf("%s: %v", committed, err)
			}
			fresh := map[string]*keys.PrivateKey{}
			filled := fillTemplate(t, root, tmpl, func(n string) *keys.PrivateKey {
				if fresh[n] == nil {
					k, err := keys.Generate()
					if err != nil {
						t.Fatal(err)
					}
					fresh[n] = k
				}
				return fresh[n]
			})
			p, err := Parse(filled)
			if err != nil {
				t.Fatalf("template filled with fresh keys: %v", err)
			}
			for n, k := range fresh {
				if n == "node" {
					continue
				}
				pr, ok := p.PrincipalBySigningKey(k.Public().Signing)
				if !ok || pr.ID != n {
					t.Fatalf("principal %s not found by its fresh key", n)
				}
			}
			if len(fresh) == 0 {
				t.Fatal("template has no key placeholders")
			}
		})
	}
}

// TestFillScript runs examples/policies/fill.sh, as docs/policy.md tells
// users to, with the real cloister binary and fresh key files, and checks
// the policy it writes validates and names those keys.
func TestFillScript(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the cloister binary; skipped with -short")
	}
	for _, tool := range []string{"sh", "sed", "grep", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed; fill.sh needs it", tool)
		}
	}
	root := repoRoot(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "cloister")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/cloister")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building cloister: %v\n%s", err, out)
	}
	keyDir := filepath.Join(dir, "keys")
	nodeData := filepath.Join(dir, "node-data")
	os.Mkdir(keyDir, 0o700)
	os.Mkdir(nodeData, 0o700)
	loaded := map[string]*keys.PrivateKey{}
	for _, n := range []string{"alice", "bob", "carol", "dave", "node"} {
		k, err := keys.Generate()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(keyDir, n+".key")
		if n == "node" {
			path = filepath.Join(nodeData, "platform.key")
		}
		if err := k.Save(path); err != nil {
			t.Fatal(err)
		}
		loaded[n] = k
	}
	fill := func(env string, args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, "sh", append([]string{filepath.Join(root, "examples", "policies", "fill.sh"),
			filepath.Join(root, "examples", "policies", "psi-sum.template.json")}, args...)...)
		cmd.Env = append(os.Environ(), env)
		return cmd
	}
	// The node's key comes only from a node data directory, and the
	// script says so, and says when it cannot run cloister at all.
	for _, c := range []struct {
		env  string
		args []string
		want string
	}{
		{"CLOISTER=" + bin, []string{keyDir}, "names the node's platform key: give the node's data directory"},
		{"CLOISTER=" + filepath.Join(dir, "nosuch"), []string{keyDir, nodeData}, "cannot run"},
	} {
		if msg, err := fill(c.env, c.args...).CombinedOutput(); err == nil || !strings.Contains(string(msg), c.want) {
			t.Errorf("fill.sh %v: %v\n%s", c.args, err, msg)
		}
	}
	cmd := fill("CLOISTER="+bin, keyDir, nodeData)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("fill.sh: %v\n%s", err, stderr.String())
	}
	p, err := Parse(out)
	if err != nil {
		t.Fatalf("fill.sh output: %v\n%s", err, out)
	}
	for n, k := range loaded {
		if n == "node" {
			if !strings.Contains(string(out), `"`+k.Public().SigningString()+`"`) {
				t.Fatal("node platform key missing")
			}
			continue
		}
		pr, ok := p.PrincipalBySigningKey(k.Public().Signing)
		if !ok || pr.ID != n {
			t.Fatalf("principal %s not found by its key", n)
		}
	}
	if pr, _ := p.Principal("dave"); pr.SealingKey != loaded["dave"].Public().SealingString() {
		t.Fatal("dave's sealing key was not filled in")
	}
	// The program hash is the committed module's, as in psi-sum.json.
	want, err := Load(filepath.Join(root, "examples", "policies", "psi-sum.json"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Programs[0].SHA256 != want.Programs[0].SHA256 {
		t.Fatal("program hash differs from the committed example's")
	}

	// A missing key file is reported with the command that creates it.
	os.Remove(filepath.Join(keyDir, "carol.key"))
	msg, err := fill("CLOISTER="+bin, keyDir, nodeData).CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "key new --out "+keyDir+"/carol.key") {
		t.Fatalf("missing key: %v\n%s", err, msg)
	}
}
