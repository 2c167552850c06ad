package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/keys"
)

var updateExamples = flag.Bool("update-examples", false, "rewrite examples/policies/*.json from their templates")

// repoRoot walks up from the package directory to go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the package directory")
		}
		dir = parent
	}
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
