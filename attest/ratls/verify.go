package ratls

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/cloisterhq/cloister/attest"
	// The classes tag 60000 dispatches to.
	_ "github.com/cloisterhq/cloister/attest/sgx"
	_ "github.com/cloisterhq/cloister/attest/tdx"
)

// Verifier verifies RA-TLS certificates given as Evidence.Data (PEM or
// DER); Evidence.Collateral goes to the embedded evidence's verifier (for
// example DCAP collateral JSON, to learn an Intel platform's TCB status).
type Verifier struct{}

func init() { attest.Register(Verifier{}) }

// Class returns attest.ClassRATLS.
func (Verifier) Class() attest.Class { return attest.ClassRATLS }

// Verify parses the certificate and calls VerifyCertificate.
func (Verifier) Verify(ctx context.Context, ev *attest.Evidence, opts attest.VerifyOptions) (*attest.Claims, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: ra-tls: no evidence", attest.ErrMalformed)
	}
	der := ev.Data
	if t := bytes.TrimSpace(der); bytes.HasPrefix(t, []byte("-----BEGIN")) {
		blk, rest := pem.Decode(t)
		if blk == nil || blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: ra-tls: input is PEM but not a CERTIFICATE block", attest.ErrMalformed)
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			return nil, fmt.Errorf("%w: ra-tls: data after the PEM certificate", attest.ErrMalformed)
		}
		der = blk.Bytes
	}
	return VerifyCertificateContext(ctx, der, ev.Collateral, opts)
}

// VerifyCertificate verifies a DER RA-TLS certificate as of opts.Time()
// and returns the claims of the evidence inside it, with PublicKey set to
// the certificate's SubjectPublicKeyInfo and Nonce to the nonce claim.
// The embedded evidence is verified by attest.Verify, so any registered
// class works (Cloister's own software and tpm evidence included).
func VerifyCertificate(der []byte, opts attest.VerifyOptions) (*attest.Claims, error) {
	return VerifyCertificateContext(context.Background(), der, nil, opts)
}

// VerifyCertificateContext is VerifyCertificate with a context and
// collateral for the embedded evidence.
func VerifyCertificateContext(ctx context.Context, der []byte, collateral [][]byte, opts attest.VerifyOptions) (*attest.Claims, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: ra-tls certificate: %v", attest.ErrMalformed, err)
	}
	now := opts.Time()
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return nil, fmt.Errorf("%w: ra-tls certificate %q is valid %s..%s, verification time %s", attest.ErrExpired, cert.Subject.CommonName,
			cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if err := checkCertSignature(cert, opts.Roots); err != nil {
		return nil, err
	}
	value := findExtension(cert)
	if value == nil {
		return nil, fmt.Errorf("%w: certificate %q has no RA-TLS evidence extension %s", attest.ErrMalformed, cert.Subject.CommonName, OIDEvidence)
	}
	ext, err := ParseExtension(value)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", attest.ErrMalformed, err)
	}
	h := hashFor(ext.Claims.PubkeyHashAlg)()
	h.Write(cert.RawSubjectPublicKeyInfo)
	if !bytes.Equal(h.Sum(nil), ext.Claims.PubkeyHash) {
		return nil, fmt.Errorf("%w: the evidence's pubkey-hash %x is not the hash of this certificate's public key: the evidence was made for another key", attest.ErrReportData, ext.Claims.PubkeyHash)
	}
	inner := &attest.Evidence{Class: ext.Class, Data: ext.Evidence, Collateral: append(append([][]byte{}, ext.Collateral...), collateral...)}
	claims, err := attest.Verify(ctx, inner, opts)
	if err != nil {
		return nil, fmt.Errorf("ra-tls embedded %s evidence: %w", ext.Class, err)
	}
	sum := sha256.Sum256(ext.ClaimsBuffer)
	if len(claims.ReportData) < 32 || !bytes.Equal(claims.ReportData[:32], sum[:]) {
		return nil, fmt.Errorf("%w: report data %x does not begin with SHA-256 of the claims buffer %x", attest.ErrReportData, claims.ReportData, sum)
	}
	claims.PublicKey = cert.RawSubjectPublicKeyInfo
	if ext.Claims.Nonce != nil {
		claims.Nonce = ext.Claims.Nonce
	}
	claims.Format = "ra-tls+" + claims.Format
	if claims.Extra == nil {
		claims.Extra = map[string]any{}
	}
	claims.Extra["ra_tls_subject"] = cert.Subject.String()
	claims.Extra["ra_tls_not_after"] = cert.NotAfter.UTC()
	for _, e := range cert.Extensions {
		if e.Id.Equal(OIDEndorsements) {
			claims.Warnings = append(claims.Warnings, "the certificate's endorsements extension (2.23.133.5.4.2) was not used; pass collateral instead")
		}
	}
	return claims, nil
}

// checkCertSignature accepts a self-signed certificate or one signed by a
// root in roots.
func checkCertSignature(cert *x509.Certificate, roots []*x509.Certificate) error {
	self := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature)
	if self == nil && bytes.Equal(cert.RawIssuer, cert.RawSubject) {
		return nil
	}
	for _, r := range roots {
		if bytes.Equal(cert.RawIssuer, r.RawSubject) && r.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature) == nil {
			return nil
		}
	}
	if self != nil && !errors.Is(self, x509.ErrUnsupportedAlgorithm) && bytes.Equal(cert.RawIssuer, cert.RawSubject) {
		return fmt.Errorf("%w: ra-tls certificate self-signature: %v", attest.ErrSignature, self)
	}
	return fmt.Errorf("%w: ra-tls certificate is neither validly self-signed nor signed by a trusted root (issuer %q)", attest.ErrChain, cert.Issuer.String())
}
