package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
)

func TestDialValidatesURL(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"http://127.0.0.1:1", "127.0.0.1:1", "https://", "https://h:1/path", "https://h:1?q=1", "::"} {
		if _, err := Dial(context.Background(), bad); err == nil {
			t.Errorf("Dial(%q) accepted", bad)
		}
	}
	if _, err := Dial(context.Background(), "https://127.0.0.1:7443/"); err != nil {
		t.Fatal(err)
	}
}

// The pin accepts the first session key and refuses any other after it.
func TestSPKIPin(t *testing.T) {
	t.Parallel()
	cert := func(spki string) tls.ConnectionState {
		return tls.ConnectionState{PeerCertificates: []*x509.Certificate{{RawSubjectPublicKeyInfo: []byte(spki)}}}
	}
	var p spkiPin
	if err := p.verify(cert("one")); err != nil {
		t.Fatal(err)
	}
	if err := p.verify(cert("one")); err != nil {
		t.Fatalf("same key refused: %v", err)
	}
	if err := p.verify(cert("two")); !errors.Is(err, ErrAttestation) {
		t.Fatalf("changed key: %v, want ErrAttestation", err)
	}
	if err := p.verify(tls.ConnectionState{}); err == nil {
		t.Fatal("no certificate accepted")
	}
	if string(p.get()) != "one" {
		t.Fatalf("pinned %q", p.get())
	}
}

// Without pinned platform keys the node is not authenticated; with them a
// certificate signed by another key is refused.
func TestVerifyNode(t *testing.T) {
	t.Parallel()
	c := &Client{now: time.Now}
	if err := c.verifyNode(tls.ConnectionState{}); err != nil {
		t.Fatalf("no platform keys: %v", err)
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c.platformKeys = append(c.platformKeys, pub)
	if err := c.verifyNode(tls.ConnectionState{PeerCertificates: []*x509.Certificate{{SignatureAlgorithm: x509.PureEd25519, RawTBSCertificate: []byte("tbs"), Signature: make([]byte, 64)}}}); !errors.Is(err, ErrNodeIdentity) {
		t.Fatalf("forged certificate: %v, want ErrNodeIdentity", err)
	}
}

func TestTerminal(t *testing.T) {
	t.Parallel()
	for s, want := range map[cloisterv1.SessionState]bool{
		cloisterv1.SessionState_SESSION_STATE_PROVISIONING: false,
		cloisterv1.SessionState_SESSION_STATE_RUNNING:      false,
		cloisterv1.SessionState_SESSION_STATE_FINISHED:     true,
		cloisterv1.SessionState_SESSION_STATE_FAILED:       true,
		cloisterv1.SessionState_SESSION_STATE_CLOSED:       true,
	} {
		if Terminal(s) != want {
			t.Errorf("Terminal(%v) = %v", s, !want)
		}
	}
}
