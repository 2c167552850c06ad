package ratls

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/cloisterhq/cloister/attest"
)

// IssueCertificate makes a self-signed RA-TLS certificate for key,
// carrying ev, whose report data must begin with SHA-256(claimsBuffer)
// (see ClaimsBuffer and ReportData), valid notBefore..notAfter. SGX and
// TDX quotes are wrapped in tag 60000, other classes in CloisterTag.
// It returns the DER certificate and a tls.Certificate ready for a server.
func IssueCertificate(key crypto.Signer, ev *attest.Evidence, claimsBuffer []byte, notBefore, notAfter time.Time) (*tls.Certificate, []byte, error) {
	if key == nil || ev == nil {
		return nil, nil, errors.New("ratls: key and evidence are required")
	}
	if !notAfter.After(notBefore) {
		return nil, nil, fmt.Errorf("ratls: validity %s..%s is empty", notBefore, notAfter)
	}
	cs, err := ParseClaims(claimsBuffer)
	if err != nil {
		return nil, nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("ratls: key: %w", err)
	}
	h := hashFor(cs.PubkeyHashAlg)()
	h.Write(spki)
	if !bytes.Equal(h.Sum(nil), cs.PubkeyHash) {
		return nil, nil, errors.New("ratls: the claims buffer's pubkey-hash is not the hash of this key")
	}
	value, err := encodeEvidence(ev, claimsBuffer)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	ski := sha256.Sum256(spki)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "Cloister RA-TLS", Organization: []string{"Cloister"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		SubjectKeyId: ski[:20],
		// Not critical: common TLS stacks reject unknown critical
		// extensions (the specification says so too).
		ExtraExtensions: []pkix.Extension{{Id: OIDEvidence, Value: value}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("ratls: sign certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, der, nil
}

func encodeEvidence(ev *attest.Evidence, claimsBuffer []byte) ([]byte, error) {
	switch ev.Class {
	case attest.ClassSGX, attest.ClassTDX:
		body, err := encMode.Marshal(intelBody{Quote: ev.Data, Claims: claimsBuffer})
		if err != nil {
			return nil, err
		}
		return encMode.Marshal(cborTag(TagIntelQuote, body))
	case attest.ClassRATLS, "":
		return nil, fmt.Errorf("ratls: cannot carry evidence of class %q", ev.Class)
	}
	coll := ev.Collateral
	if coll == nil {
		coll = [][]byte{}
	}
	body, err := encMode.Marshal(cloisterBody{Class: string(ev.Class), Evidence: ev.Data, Claims: claimsBuffer, Collateral: coll})
	if err != nil {
		return nil, err
	}
	return encMode.Marshal(cborTag(CloisterTag, body))
}

// Issue attests a fresh claims buffer for key (with an optional nonce)
// through attester and issues the certificate.
func Issue(ctx context.Context, key crypto.Signer, attester attest.Attester, nonce []byte, notBefore, notAfter time.Time) (*tls.Certificate, []byte, error) {
	cb, err := ClaimsBuffer(key.Public(), nonce)
	if err != nil {
		return nil, nil, err
	}
	ev, err := attester.Attest(ctx, ReportData(cb))
	if err != nil {
		return nil, nil, fmt.Errorf("ratls: attest: %w", err)
	}
	return IssueCertificate(key, ev, cb, notBefore, notAfter)
}

// ClientConfig returns a TLS client configuration that accepts a server
// only if its leaf is an RA-TLS certificate whose evidence verifies under
// opts and passes ref (validated as of opts.Time()). The usual WebPKI
// checks are replaced by these: the certificate is self-signed.
func ClientConfig(opts attest.VerifyOptions, ref attest.ReferenceValues) *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		InsecureSkipVerify:    true, // replaced by VerifyPeerCertificate below
		VerifyPeerCertificate: VerifyPeer(opts, ref, nil),
	}
}

// VerifyPeer returns a tls.Config.VerifyPeerCertificate function that
// verifies the peer's RA-TLS leaf certificate, validates its claims
// against ref and hands them to accept (which may be nil).
func VerifyPeer(opts attest.VerifyOptions, ref attest.ReferenceValues, accept func(*attest.Claims) error) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("ratls: peer sent no certificate")
		}
		c, err := VerifyCertificate(raw[0], opts)
		if err != nil {
			return err
		}
		if err := attest.Validate(c, ref, opts.Time()); err != nil {
			return err
		}
		if accept != nil {
			return accept(c)
		}
		return nil
	}
}
