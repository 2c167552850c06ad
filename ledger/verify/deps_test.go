package verify_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies: a sceptic who imports this package links the standard
// library, x/mod's note and tlog, the project's canonical JSON and key
// form, and curve25519-voi's Ed25519 arithmetic (decision 0152) — no
// consensus engine, no database, nothing else.
func TestDependencies(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	allowed := map[string]bool{
		"github.com/cloisterhq/cloister/ledger/verify": true,
		"github.com/cloisterhq/cloister/jcs":           true,
		"github.com/cloisterhq/cloister/api/protocol":  true,
		"golang.org/x/mod/sumdb/note":                  true,
		"golang.org/x/mod/sumdb/tlog":                  true,
	}
	ed25519Deps := "github.com/oasisprotocol/curve25519-voi/"
	arithmetic := map[string]bool{"golang.org/x/sys/cpu": true, "golang.org/x/crypto/internal/alias": true, "golang.org/x/crypto/chacha20": true}
	deps := strings.Fields(string(out))
	if len(deps) < 3 {
		t.Fatalf("go list -deps printed %q", out)
	}
	for _, d := range deps {
		if strings.Contains(d, "cometbft") {
			t.Errorf("depends on the consensus engine: %s", d)
		} else if !allowed[d] && !strings.HasPrefix(d, ed25519Deps) && !arithmetic[d] {
			t.Errorf("depends on %s, which a verifier does not need", d)
		}
	}
}
