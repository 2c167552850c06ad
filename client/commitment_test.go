package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/api/protocol"
)

func signedCommitment(t testing.TB) ([]byte, []byte) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	outputs := map[string]map[string]string{"r\u2028é<>": {"dave": strings.Repeat("ab", 32)}}
	ph := strings.Repeat("cd", 32)
	msg, err := protocol.ResultCommitmentMessage("s1", ph, outputs)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(msg)
	sig, _ := ecdsa.SignASN1(rand.Reader, k, h[:])
	body, _ := json.Marshal(map[string]any{"session": "s1", "policy_hash": ph, "outputs": outputs, "session_key": spki, "signature": sig})
	return body, spki
}

func TestResultCommitment(t *testing.T) {
	t.Parallel()
	body, spki := signedCommitment(t)
	rc, err := ParseResultCommitment(body)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Verify(spki); err != nil {
		t.Fatal(err)
	}
	// The message is RFC 8785: U+2028 and <> are written raw, keys sorted.
	msg, _ := protocol.ResultCommitmentMessage("s1", rc.PolicyHash, rc.Outputs)
	if want := protocol.ResultCommitmentDomain + `{"outputs":{"r` + "\u2028" + `é<>":{"dave":"` + strings.Repeat("ab", 32) + `"}},"policy_hash":"`; !strings.HasPrefix(string(msg), want) {
		t.Fatalf("message %q", msg)
	}
	rc.Session = "s2"
	if err := rc.Verify(spki); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("another session's commitment: %v", err)
	}
	for _, bad := range []string{`{}`, `{"session":"s","policy_hash":"zz"}`, `[]`,
		`{"session":"s","policy_hash":"` + strings.Repeat("x", 64) + `","outputs":{},"session_key":"AA==","signature":"AA=="}`} {
		if _, err := ParseResultCommitment([]byte(bad)); err == nil {
			t.Errorf("%s parsed", bad)
		}
	}
}

// FuzzResultCommitment: bodies come from a public ledger; parsing and
// verifying them must never panic.
func FuzzResultCommitment(f *testing.F) {
	body, spki := signedCommitment(f)
	f.Add(body)
	f.Add([]byte(`{"session":"s","policy_hash":"","outputs":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rc, err := ParseResultCommitment(b)
		if err != nil {
			return
		}
		rc.Verify(spki)
		rc.Verify(rc.SessionKey)
	})
}
