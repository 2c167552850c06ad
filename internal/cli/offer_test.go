package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// A registered node publishes an offer with the CLI; 'offer list' shows
// it with its age, endpoint and organisation, as JSON and as a table.
func TestOfferPublishAndList(t *testing.T) {
	home, url := ledgerTestnetHome(t, "")
	dir := t.TempDir()
	nodeKey, orgKey := filepath.Join(dir, "node.key"), filepath.Join(dir, "org.key")
	for _, k := range []string{nodeKey, orgKey} {
		if code, _, stderr := runCLI(t, "key", "new", "--out", k); code != ExitOK {
			t.Fatalf("key new: %s", stderr)
		}
	}
	nk, err := keys.Load(nodeKey)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := keys.Load(orgKey)
	if err != nil {
		t.Fatal(err)
	}
	orgText := protocol.FormatEd25519Key(ok.Signer().Public().(ed25519.PublicKey))
	if code, _, stderr := runCLI(t, "ledger", "member", "admit", "--ledger", url, "--validator-home", home, "--member", orgText); code != ExitOK {
		t.Fatalf("member admit: %s", stderr)
	}
	// An offer from a node that never registered: refused.
	ev := filepath.Join(dir, "evidence")
	if err := os.WriteFile(ev, []byte("evidence bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	publish := []string{"offer", "publish", "--ledger", url, "--key", nodeKey, "--class", "software", "--evidence", ev,
		"--memory", "2GiB", "--cores", "2", "--concurrency", "4", "--price", "0.001", "--region", "eu-west", "--ttl", "60s"}
	if code, _, stderr := runCLI(t, publish...); code != ExitFailure || !strings.Contains(stderr, "registered") {
		t.Fatalf("offer from an unregistered node: exit %d: %s", code, stderr)
	}
	c, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	se, err := verify.NewEntry(nk.Signer(), ledger.KindNodeRegistered, map[string]any{
		"platform_key": protocol.FormatEd25519Key(nk.Signer().Public().(ed25519.PublicKey)), "class": "software", "evidence": "ZXZpZGVuY2UgYnl0ZXM=",
		"endpoint": "http://127.0.0.1:7001", "organisation": orgText})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(context.Background(), se); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI(t, publish...); code != ExitOK {
		t.Fatalf("offer publish: exit %d: %s", code, stderr)
	}
	if code, _, _ := runCLI(t, "offer", "publish", "--ledger", url, "--key", nodeKey); code != ExitUsage {
		t.Fatalf("offer publish without its flags: exit %d, want %d", code, ExitUsage)
	}
	code, out, stderr := runCLI(t, "offer", "list", "--ledger", url, "--json")
	if code != ExitOK {
		t.Fatalf("offer list: exit %d: %s", code, stderr)
	}
	var l offerListing
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("offer list --json: %v\n%s", err, out)
	}
	if len(l.Offers) != 1 {
		t.Fatalf("offer list: %d offers, want 1\n%s", len(l.Offers), out)
	}
	o := l.Offers[0]
	if o.Node != protocol.FormatEd25519Key(nk.Signer().Public().(ed25519.PublicKey)) || o.Endpoint != "http://127.0.0.1:7001" || o.Organisation != orgText ||
		o.Offer.Memory != 2<<30 || o.Offer.Price != "0.001" || o.AgeSeconds < 0 || o.AgeSeconds > 30 || !o.Expires.After(l.AsOf) {
		t.Fatalf("offer list: %+v", o)
	}
	code, out, _ = runCLI(t, "offer", "list", "--ledger", url)
	if code != ExitOK || !strings.Contains(out, "AGE") || !strings.Contains(out, "2GiB") || !strings.Contains(out, "eu-west") {
		t.Fatalf("offer list table: exit %d\n%s", code, out)
	}
}
