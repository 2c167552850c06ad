package node_test

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"testing"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/ratls"
	"github.com/cloisterhq/cloister/seal"
)

// A session's certificate is an RA-TLS certificate whose evidence binds
// its key, and whose nonce claim binds the policy and the HPKE key.
func TestSessionCertificateIsRATLS(t *testing.T) {
	s := newScenario(t)
	tn, _, as, doc := setup(t, s)
	conn, err := tls.Dial("tcp", tn.url[len("https://"):], &tls.Config{ServerName: protocol.ServerName(as.ID()), InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	der := conn.ConnectionState().PeerCertificates[0].Raw
	conn.Close()
	claims, err := ratls.VerifyCertificate(der, attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{tn.PlatformKey()}})
	if err != nil {
		t.Fatalf("session certificate: %v", err)
	}
	resp, err := newRawSessionAttest(t, tn, as.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seal.ParsePublicKey(resp.HpkePublicKey); err != nil {
		t.Fatal(err)
	}
	want := protocol.RATLSNonce(mustParse(t, doc).Hash(), resp.HpkePublicKey)
	if !bytes.Equal(claims.Nonce, want[:]) {
		t.Fatalf("nonce claim %x, want %x", claims.Nonce, want)
	}
	// Another node's key does not vouch for it.
	other := startNode(t, t.TempDir(), nil)
	if _, err := ratls.VerifyCertificate(der, attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{other.PlatformKey()}}); err == nil {
		t.Fatal("verified under another node's platform key")
	}
}
