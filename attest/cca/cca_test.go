package cca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/internal/corpus"
)

func conformance(t testing.TB, rel string) []byte {
	return corpus.Read(t, "attestation/"+rel)
}

func platformKey(t testing.TB) crypto.PublicKey {
	t.Helper()
	ta, err := attest.ParseTrustAnchors("cca_platform.pub", conformance(t, "cca/cca_platform.pub"))
	if err != nil || len(ta.Keys) != 1 {
		t.Fatal(err)
	}
	return ta.Keys[0]
}

func verify(data []byte, keys ...crypto.PublicKey) (*attest.Claims, error) {
	return attest.Verify(context.Background(), &attest.Evidence{Class: attest.ClassCCA, Data: data}, attest.VerifyOptions{TrustedKeys: keys})
}

func TestConformanceTokens(t *testing.T) {
	for _, f := range []string{"cca/rmm_legacy_evidence_tag907.cbor", "cca/cca_token.cbor"} {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data := conformance(t, f)
			if c, err := attest.Detect(data); err != nil || c != attest.ClassCCA {
				t.Fatalf("detect %v %v", c, err)
			}
			c, err := verify(data, platformKey(t))
			if err != nil {
				t.Fatal(err)
			}
			if c.HardwareProtected || len(c.Warnings) == 0 || c.Warnings[0] != TestKeyWarning {
				t.Fatalf("test-key token must be flagged: %+v", c.Warnings)
			}
			if c.Debug || c.Extra["profile"] != "http://arm.com/CCA-SSD/1.0.0" || c.Extra["lifecycle"] != "0x3003" {
				t.Fatalf("extra %+v", c.Extra)
			}
			if !bytes.Equal(c.ReportData, bytes.Repeat([]byte{0xab}, 64)) || len(c.Measurement) != 32 || len(c.Measurements["rem3"]) == 0 || c.Measurements["sw:BL"] == nil {
				t.Fatalf("claims %+v", c)
			}
			if _, err := verify(data); !errors.Is(err, attest.ErrUntrustedSigner) {
				t.Fatalf("no pinned key: %v", err)
			}
			other, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			if _, err := verify(data, &other.PublicKey); !errors.Is(err, attest.ErrSignature) {
				t.Fatalf("other key: %v", err)
			}
		})
	}
}

func TestTampered(t *testing.T) {
	data := conformance(t, "cca/rmm_legacy_evidence_tag907.cbor")
	tok, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(needle []byte, off int) []byte {
		i := bytes.Index(data, needle)
		if i < 0 {
			t.Fatal("needle not found")
		}
		d := append([]byte(nil), data...)
		d[i+off] ^= 1
		return d
	}
	cases := map[string][]byte{
		"platform claim":     flip(tok.PlatformClaims.ImplementationID, 3),
		"platform signature": flip(tok.Platform.Signature, 10),
		"realm RIM":          flip(tok.RealmClaims.RIM, 0),
		"realm signature":    flip(tok.Realm.Signature, 10),
	}
	for name, d := range cases {
		if _, err := verify(d, platformKey(t)); !errors.Is(err, attest.ErrSignature) {
			t.Errorf("%s: %v, want ErrSignature", name, err)
		}
	}
	if _, err := verify(append(append([]byte(nil), data...), 0), platformKey(t)); !errors.Is(err, attest.ErrMalformed) {
		t.Errorf("trailing byte: %v", err)
	}
}

// TestRealmBinding re-signs the platform token (with the published test
// key, as an attacker could) over another challenge: the realm is then no
// longer bound to it and verification must fail for that reason.
func TestRealmBinding(t *testing.T) {
	blk, _ := pem.Decode(conformance(t, "cca/cca_platform.pem"))
	priv, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	data := conformance(t, "cca/rmm_legacy_evidence_tag907.cbor")
	tok, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	var claims map[int]cbor.RawMessage
	if err := cbor.Unmarshal(tok.Platform.Payload, &claims); err != nil {
		t.Fatal(err)
	}
	claims[claimChallenge], _ = cbor.Marshal(bytes.Repeat([]byte{7}, 32))
	payload, _ := cbor.Marshal(claims)
	signer, _ := cose.NewSigner(cose.AlgorithmES384, priv)
	msg := cose.Sign1Message{Headers: cose.Headers{Protected: cose.ProtectedHeader{cose.HeaderLabelAlgorithm: cose.AlgorithmES384}}, Payload: payload}
	if err := msg.Sign(rand.Reader, nil, signer); err != nil {
		t.Fatal(err)
	}
	platform, _ := msg.MarshalCBOR()
	realm, _ := tok.Realm.MarshalCBOR()
	type entry struct {
		_       struct{} `cbor:",toarray"`
		Format  uint64
		Payload []byte
	}
	forged, _ := cbor.Marshal(cbor.Tag{Number: TagCollection, Content: map[uint64]entry{
		keyPlatformToken: {Format: contentFormatCWT, Payload: platform},
		keyRealmToken:    {Format: contentFormatCWT, Payload: realm},
	}})
	_, err = verify(forged, platformKey(t))
	if !errors.Is(err, attest.ErrSignature) || !strings.Contains(err.Error(), "not bound") {
		t.Fatalf("forged binding: %v", err)
	}
	// The same construction with the original challenge verifies: the
	// failure above is the binding and nothing else.
	claims[claimChallenge], _ = cbor.Marshal(tok.PlatformClaims.Challenge)
	msg = cose.Sign1Message{Headers: msg.Headers, Payload: nil}
	msg.Payload, _ = cbor.Marshal(claims)
	if err := msg.Sign(rand.Reader, nil, signer); err != nil {
		t.Fatal(err)
	}
	platform, _ = msg.MarshalCBOR()
	ok, _ := cbor.Marshal(cbor.Tag{Number: TagCollection, Content: map[uint64]entry{
		keyPlatformToken: {Format: contentFormatCWT, Payload: platform},
		keyRealmToken:    {Format: contentFormatCWT, Payload: realm},
	}})
	if _, err := verify(ok, platformKey(t)); err != nil {
		t.Fatalf("re-signed with the original challenge: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(conformance(f, "cca/rmm_legacy_evidence_tag907.cbor"))
	f.Add(conformance(f, "cca/cca_token.cbor"))
	key := platformKey(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := Parse(data)
		if err != nil {
			return
		}
		_, _ = tok.Verify(attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{key}})
	})
}
