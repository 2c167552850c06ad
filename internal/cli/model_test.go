package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/model"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// A model published by its organisation for its node shows in 'model
// list' (as JSON and as a table); 'model revoke' by someone else is
// refused, by the owner it marks the version revoked.
func TestModelListAndRevoke(t *testing.T) {
	home, url := ledgerTestnetHome(t, "")
	dir := t.TempDir()
	newKey := func(name string) (string, ed25519.PrivateKey) {
		p := filepath.Join(dir, name+".key")
		if code, _, stderr := runCLI(t, "key", "new", "--out", p); code != ExitOK {
			t.Fatalf("key new: %s", stderr)
		}
		k, err := keys.Load(p)
		if err != nil {
			t.Fatal(err)
		}
		return p, k.Signer()
	}
	orgFile, org := newKey("org")
	otherFile, _ := newKey("other")
	_, node := newKey("node")
	orgText := protocol.FormatEd25519Key(org.Public().(ed25519.PublicKey))
	nodeText := protocol.FormatEd25519Key(node.Public().(ed25519.PublicKey))
	if code, _, stderr := runCLI(t, "ledger", "member", "admit", "--ledger", url, "--validator-home", home, "--member", orgText); code != ExitOK {
		t.Fatalf("member admit: %s", stderr)
	}
	c, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	appendOne := func(k ed25519.PrivateKey, kind verify.Kind, body any) {
		se, err := verify.NewEntry(k, kind, body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Append(context.Background(), se); err != nil {
			t.Fatal(err)
		}
	}
	appendOne(node, ledger.KindNodeRegistered, map[string]any{"platform_key": nodeText, "class": "software", "evidence": "ZXZpZGVuY2U=",
		"endpoint": "https://127.0.0.1:7001", "organisation": orgText})
	appendOne(org, ledger.KindModelPublished, model.Model{Name: "hospital-a/stats", Version: 1, ProgramSHA256: strings.Repeat("ab", 32),
		Nodes:     []string{nodeText},
		Functions: []model.Function{{Name: "count", Params: json.RawMessage(`{"type":"object"}`), Result: json.RawMessage(`{"type":"object"}`)}},
		Output:    model.Output{MinRows: 5}, Approval: model.Approval{Mode: model.ApprovalAutomatic, Allow: []string{orgText}}})

	code, out, stderr := runCLI(t, "model", "list", "--ledger", url, "--json")
	if code != ExitOK {
		t.Fatalf("model list: exit %d: %s", code, stderr)
	}
	var l client.ModelList
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Models) != 1 {
		t.Fatalf("model list --json: %v\n%s", err, out)
	}
	if m := l.Models[0]; m.Name != "hospital-a/stats" || m.Owner != orgText || m.Endpoints[0] != "https://127.0.0.1:7001" || m.Revoked != 0 {
		t.Fatalf("model list: %+v", m)
	}
	revoke := []string{"model", "revoke", "--ledger", url, "--version", "1", "hospital-a/stats"}
	if code, _, stderr := runCLI(t, append(revoke, "--key", otherFile)...); code != ExitFailure || !strings.Contains(stderr, "belongs to") {
		t.Fatalf("revoke by a stranger: exit %d: %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, append(revoke, "--key", orgFile)...); code != ExitOK {
		t.Fatalf("revoke: exit %d: %s", code, stderr)
	}
	code, out, stderr = runCLI(t, "model", "list", "--ledger", url)
	if code != ExitOK || !strings.Contains(out, "hospital-a/stats") || !strings.Contains(out, "revoked@") || !strings.Contains(out, "count") {
		t.Fatalf("model list: exit %d: %s%s", code, out, stderr)
	}
}
