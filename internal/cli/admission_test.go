package cli

import (
	"crypto/ed25519"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/node"
)

// admission token prints a token that the node's verifier accepts for
// exactly the subject and node it names.
func TestAdmissionTokenCommand(t *testing.T) {
	dir := t.TempDir()
	opPath := filepath.Join(dir, "operator.key")
	if code, _, stderr := runCLI(t, "key", "new", "--out", opPath); code != ExitOK {
		t.Fatalf("key new: %s", stderr)
	}
	op, err := keys.Load(opPath)
	if err != nil {
		t.Fatal(err)
	}
	subject, nodeKey := mustKey(t), mustKey(t)
	code, stdout, stderr := runCLI(t, "admission", "token", "--key", opPath, "--subject", subject.Public().SigningString(),
		"--node", nodeKey.Public().SigningString(), "--valid", "1h")
	if code != ExitOK {
		t.Fatalf("admission token: exit %d: %s", code, stderr)
	}
	tok := strings.TrimSpace(stdout)
	issuers := []ed25519.PublicKey{op.Public().Signing}
	if err := node.VerifyAdmissionToken(tok, issuers, subject.Public().Signing, nodeKey.Public().Signing, time.Now()); err != nil {
		t.Fatalf("the printed token does not verify: %v", err)
	}
	if err := node.VerifyAdmissionToken(tok, issuers, subject.Public().Signing, mustKey(t).Public().Signing, time.Now()); err == nil {
		t.Fatal("the token admits on another node")
	}
	if err := node.VerifyAdmissionToken(tok, issuers, subject.Public().Signing, nodeKey.Public().Signing, time.Now().Add(2*time.Hour)); err == nil {
		t.Fatal("the token admits after --valid")
	}
	for _, args := range [][]string{
		{"admission", "token", "--key", opPath},
		{"admission", "token", "--key", opPath, "--subject", "ed25519:nope"},
		{"admission", "token", "--key", opPath, "--subject", subject.Public().SigningString(), "--valid", "-1h"},
	} {
		if code, _, _ := runCLI(t, args...); code != ExitUsage {
			t.Fatalf("%v: exit %d, want %d", args, code, ExitUsage)
		}
	}
}

// A node in open mode does not start on an address beyond loopback unless
// --allow-open; the other modes need what they admit by.
func TestNodeAdmissionFlags(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--listen", "0.0.0.0:0"}, "--allow-open"},
		{[]string{"--admission", "allow-list"}, "--admit-key"},
		{[]string{"--admission", "token"}, "--token-issuer"},
		{[]string{"--admission", "consortium", "--no-ledger"}, "--no-ledger"},
		{[]string{"--admission", "guess"}, "--admission"},
		{[]string{"--admit-key", mustKey(t).Public().SigningString()}, "--admission allow-list"},
		{[]string{"--max-upload", "lots"}, "--max-upload"},
	} {
		args := append([]string{"node", "--data", filepath.Join(dir, "d")}, tc.args...)
		code, _, stderr := runCLI(t, args...)
		if code != ExitUsage || !strings.Contains(stderr, tc.says) {
			t.Fatalf("%v: exit %d, stderr %q; want %d mentioning %s", tc.args, code, stderr, ExitUsage, tc.says)
		}
	}
}

func mustKey(t *testing.T) *keys.PrivateKey {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
