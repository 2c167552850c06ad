package ratls

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/software"
	"github.com/cloisterhq/cloister/internal/corpus"
)

func read(t testing.TB, rel string) []byte {
	return corpus.Read(t, rel)
}

func certDER(t testing.TB, name string) []byte {
	blk, _ := pem.Decode(read(t, "attestation/ra-tls/"+name))
	if blk == nil {
		t.Fatalf("%s: no PEM", name)
	}
	return blk.Bytes
}

var (
	today = time.Now()
	// recently is when the conformance samples are checked: a fixed date
	// rather than the clock, so that their certificates expiring
	// (2029–2030) does not fail the tests.
	recently = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	in2023   = time.Date(2023, 6, 1, 0, 0, 0, 0, time.UTC)
)

// TestConformanceCertificates: every sample is from a DEBUG enclave
// (attributes 0x07) and is refused by default; with debug allowed the
// self-signature, the pubkey-hash over the SPKI, report_data[0:32] =
// SHA-256(claims buffer), the quote signature, the QE report and the PCK
// chain to the Intel root all verify. No collateral: TCB status unknown.
func TestConformanceCertificates(t *testing.T) {
	for _, tc := range []struct {
		file, mrenclavePrefix string
		at                    time.Time
	}{
		{"gramine-cert.pem", "0866e7ca", recently},
		{"intel-sgxsdk-cert.pem", "09e218a4", recently},
		{"rats-tls-cert.pem", "38e1b40b", in2023},
	} {
		t.Run(tc.file, func(t *testing.T) {
			pemBytes := read(t, "attestation/ra-tls/"+tc.file)
			if !Sniff(pemBytes) {
				t.Error("Sniff = false")
			}
			ev := &attest.Evidence{Class: attest.ClassRATLS, Data: pemBytes}
			_, err := attest.Verify(context.Background(), ev, attest.VerifyOptions{Now: tc.at})
			if !errors.Is(err, attest.ErrDebug) || !strings.Contains(err.Error(), "flags 0x7") {
				t.Fatalf("without AllowDebug: err = %v, want ErrDebug", err)
			}
			c, err := attest.Verify(context.Background(), ev, attest.VerifyOptions{Now: tc.at, AllowDebug: true})
			if err != nil {
				t.Fatalf("with AllowDebug: %v", err)
			}
			if c.Class != attest.ClassSGX || c.Format != "ra-tls+sgx-quote-v3" || !c.Debug || c.TCBStatus != "" {
				t.Errorf("class %s format %s debug %v status %q", c.Class, c.Format, c.Debug, c.TCBStatus)
			}
			if !strings.HasPrefix(hex.EncodeToString(c.Measurement), tc.mrenclavePrefix) {
				t.Errorf("mrenclave %x", c.Measurement)
			}
			cert, _ := x509.ParseCertificate(certDER(t, tc.file))
			if !bytes.Equal(c.PublicKey, cert.RawSubjectPublicKeyInfo) {
				t.Error("PublicKey is not the certificate's SPKI")
			}
			ext, err := ParseExtension(findExtension(cert))
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(ext.ClaimsBuffer)
			if !bytes.Equal(c.ReportData[:32], sum[:]) {
				t.Error("report data does not begin with SHA-256(claims buffer)")
			}
			if len(c.Warnings) == 0 || !strings.Contains(strings.Join(c.Warnings, ";"), "no DCAP collateral") {
				t.Errorf("warnings %v", c.Warnings)
			}
		})
	}
}

func TestRATSTLSExpired(t *testing.T) {
	ev := &attest.Evidence{Class: attest.ClassRATLS, Data: read(t, "attestation/ra-tls/rats-tls-cert.pem")}
	_, err := attest.Verify(context.Background(), ev, attest.VerifyOptions{Now: today, AllowDebug: true})
	if !errors.Is(err, attest.ErrExpired) || !strings.Contains(err.Error(), "2024-02-22") {
		t.Fatalf("err = %v, want ErrExpired (valid until 2024-02-22)", err)
	}
}

// rewrap puts a sample's evidence extension into a new certificate signed
// by a fresh key: the pubkey-hash no longer matches.
func TestEvidenceMovedToAnotherKey(t *testing.T) {
	cert, _ := x509.ParseCertificate(certDER(t, "gramine-cert.pem"))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "thief"}, NotBefore: recently.Add(-time.Hour), NotAfter: recently.Add(time.Hour),
		ExtraExtensions: []pkix.Extension{{Id: OIDEvidence, Value: findExtension(cert)}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyCertificate(der, attest.VerifyOptions{Now: recently, AllowDebug: true}); !errors.Is(err, attest.ErrReportData) || !strings.Contains(err.Error(), "pubkey-hash") {
		t.Fatalf("err = %v, want ErrReportData pubkey-hash", err)
	}
}

func TestTamperedCertificate(t *testing.T) {
	der := certDER(t, "gramine-cert.pem")
	opts := attest.VerifyOptions{Now: recently, AllowDebug: true}
	sig := bytes.Clone(der)
	sig[len(sig)-5] ^= 1 // inside the signature value
	if _, err := VerifyCertificate(sig, opts); !errors.Is(err, attest.ErrSignature) {
		t.Errorf("signature: err = %v, want ErrSignature", err)
	}
	cert, _ := x509.ParseCertificate(der)
	ext := findExtension(cert)
	i := bytes.Index(der, ext) + 200 // inside the embedded quote's report body
	body := bytes.Clone(der)
	body[i] ^= 1
	if _, err := VerifyCertificate(body, opts); !errors.Is(err, attest.ErrSignature) {
		t.Errorf("extension: err = %v, want ErrSignature", err)
	}
	if _, err := VerifyCertificate(der[:100], opts); !errors.Is(err, attest.ErrMalformed) {
		t.Errorf("truncated: err = %v, want ErrMalformed", err)
	}
}

// TestRoundTripSoftwareOverTLS issues a certificate carrying software
// evidence for a session key and checks it from a Go TLS client.
func TestRoundTripSoftwareOverTLS(t *testing.T) {
	_, platform, _ := ed25519.GenerateKey(rand.Reader)
	att, err := software.NewAttester(platform, software.WithMeasurement(sha256.Sum256([]byte("runtime"))))
	if err != nil {
		t.Fatal(err)
	}
	session, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	nonce := []byte("fresh nonce 42")
	tlsCert, der, err := Issue(context.Background(), session, att, nonce, today.Add(-time.Minute), today.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	opts := attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{platform.Public()}}
	c, err := VerifyCertificate(der, opts)
	if err != nil {
		t.Fatal(err)
	}
	if c.Class != attest.ClassSoftware || !bytes.Equal(c.Nonce, nonce) || c.HardwareProtected {
		t.Errorf("class %s nonce %q hw %v", c.Class, c.Nonce, c.HardwareProtected)
	}
	want := sha256.Sum256([]byte("runtime"))
	if !bytes.Equal(c.Measurement, want[:]) {
		t.Errorf("measurement %x", c.Measurement)
	}

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*tlsCert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = conn.Write([]byte("hello from the isolate"))
			conn.Close()
		}
	}()
	dial := func(cfg *tls.Config) (string, error) {
		d := &net.Dialer{Timeout: 5 * time.Second}
		conn, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), cfg)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(conn)
		return string(b), err
	}
	var seen *attest.Claims
	cfg := ClientConfig(opts, attest.ReferenceValues{Measurements: [][]byte{want[:]}, Nonce: nonce})
	cfg.VerifyPeerCertificate = VerifyPeer(opts, attest.ReferenceValues{Measurements: [][]byte{want[:]}, Nonce: nonce}, func(c *attest.Claims) error { seen = c; return nil })
	got, err := dial(cfg)
	if err != nil || got != "hello from the isolate" || seen == nil {
		t.Fatalf("dial: %q %v (claims %v)", got, err, seen != nil)
	}
	// A client pinning another platform key refuses the handshake.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := dial(ClientConfig(attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{other.Public()}}, attest.ReferenceValues{})); err == nil || !strings.Contains(err.Error(), "not among") {
		t.Fatalf("untrusted platform key: err = %v", err)
	}
	// So does one expecting another measurement.
	if _, err := dial(ClientConfig(opts, attest.ReferenceValues{Measurements: [][]byte{make([]byte, 32)}})); err == nil || !strings.Contains(err.Error(), "allow-list") {
		t.Fatalf("wrong measurement: err = %v", err)
	}
}

// TestReportDataMustBindClaims: evidence over other report data, wrapped
// with a valid claims buffer, is refused.
func TestReportDataMustBindClaims(t *testing.T) {
	_, platform, _ := ed25519.GenerateKey(rand.Reader)
	att, _ := software.NewAttester(platform, software.WithMeasurement([32]byte{1}))
	session, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cb, err := ClaimsBuffer(session.Public(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := att.Attest(context.Background(), [64]byte{9})
	if err != nil {
		t.Fatal(err)
	}
	_, der, err := IssueCertificate(session, ev, cb, today.Add(-time.Minute), today.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyCertificate(der, attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{platform.Public()}}); !errors.Is(err, attest.ErrReportData) {
		t.Fatalf("err = %v, want ErrReportData", err)
	}
	// And the issuer refuses a claims buffer made for another key.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, _, err := IssueCertificate(other, ev, cb, today, today.Add(time.Hour)); err == nil {
		t.Fatal("issued a certificate whose pubkey-hash is for another key")
	}
}

// TestIssueIntelQuoteUsesTag60000: an SGX quote is wrapped the
// interoperable way, so the sample's own evidence round-trips through our
// issuer (with the sample's claims buffer, the key must match: re-issue
// is only possible for the original key, so only the encoding is checked).
func TestIssueIntelQuoteUsesTag60000(t *testing.T) {
	cert, _ := x509.ParseCertificate(certDER(t, "gramine-cert.pem"))
	ext, _ := ParseExtension(findExtension(cert))
	value, err := encodeEvidence(&attest.Evidence{Class: attest.ClassSGX, Data: ext.Evidence}, ext.ClaimsBuffer)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(value, findExtension(cert)) {
		t.Error("re-encoding the gramine evidence does not give the same bytes")
	}
}

func TestClaimsBufferShape(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cb, err := ClaimsBuffer(key.Public(), []byte{1, 2})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := ParseClaims(cb)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(key.Public())
	sum := sha256.Sum256(spki)
	if cs.PubkeyHashAlg != HashSHA256 || !bytes.Equal(cs.PubkeyHash, sum[:]) || !bytes.Equal(cs.Nonce, []byte{1, 2}) {
		t.Errorf("claims %+v", cs)
	}
	rd := ReportData(cb)
	cbSum := sha256.Sum256(cb)
	if !bytes.Equal(rd[:32], cbSum[:]) || !bytes.Equal(rd[32:], make([]byte, 32)) {
		t.Error("ReportData")
	}
}
