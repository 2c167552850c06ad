package nitro

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/veraison/go-cose"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/roots"
)

// Format is Claims.Format for Nitro documents.
const Format = "nitro-attestation-document"

// Verifier checks Nitro attestation documents.
type Verifier struct{}

func init() { attest.Register(Verifier{}) }

// Class returns attest.ClassNitro.
func (Verifier) Class() attest.Class { return attest.ClassNitro }

// Verify checks the COSE signature with the leaf certificate's key, the
// chain leaf → cabundle → AWS root (built in, or opts.Roots) at opts.Time(),
// and refuses debug-mode enclaves unless opts.AllowDebug. Certificates in
// ev.Collateral are ignored: the document carries its own bundle.
func (Verifier) Verify(ctx context.Context, ev *attest.Evidence, opts attest.VerifyOptions) (*attest.Claims, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: no evidence", attest.ErrMalformed)
	}
	p, err := Parse(ev.Data)
	if err != nil {
		return nil, err
	}
	return p.Verify(opts)
}

// Verify checks an already parsed document; see Verifier.Verify.
func (p *Parsed) Verify(opts attest.VerifyOptions) (*attest.Claims, error) {
	now := opts.Time()
	pub, ok := p.Leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P384() {
		return nil, fmt.Errorf("%w: nitro leaf certificate key is %T, want ECDSA P-384", attest.ErrChain, p.Leaf.PublicKey)
	}
	v, err := cose.NewVerifier(cose.AlgorithmES384, pub)
	if err != nil {
		return nil, fmt.Errorf("%w: nitro leaf key: %v", attest.ErrSignature, err)
	}
	if err := p.Message.Verify(nil, v); err != nil {
		return nil, fmt.Errorf("%w: nitro document signature does not verify with the leaf certificate (%v)", attest.ErrSignature, err)
	}

	pool := x509.NewCertPool()
	if !opts.ReplaceRoots {
		pool.AddCert(roots.AWSNitroRoot())
	}
	for _, r := range opts.Roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range p.CABundle {
		inter.AddCert(c)
	}
	_, err = p.Leaf.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			return nil, fmt.Errorf("%w: nitro certificate chain at %s: %v", attest.ErrExpired, now.UTC().Format(time.RFC3339), err)
		}
		return nil, fmt.Errorf("%w: nitro leaf %q does not chain to a trusted root at %s: %v", attest.ErrChain, p.Leaf.Subject.CommonName, now.UTC().Format(time.RFC3339), err)
	}

	d := &p.Doc
	// A debug-mode enclave reports PCR0 (and PCR1, PCR2) as all zeros.
	debug := isZero(d.PCRs[0])
	if debug && !opts.AllowDebug {
		return nil, fmt.Errorf("%w: nitro enclave %s runs in debug mode (PCR0 is all zeros)", attest.ErrDebug, d.ModuleID)
	}
	c := &attest.Claims{
		Class:             attest.ClassNitro,
		Format:            Format,
		Measurement:       clone(d.PCRs[0]),
		Measurements:      make(map[string][]byte, len(d.PCRs)),
		ReportData:        clone(d.UserData),
		Nonce:             clone(d.Nonce),
		PublicKey:         clone(d.PublicKey),
		HardwareProtected: true,
		Debug:             debug,
		Advisories:        []string{},
		Warnings:          []string{},
		IssuedAt:          time.UnixMilli(int64(d.Timestamp)).UTC(),
		Signer:            p.Leaf.Subject.String(),
		Extra:             map[string]any{"module_id": d.ModuleID},
	}
	for i, v := range d.PCRs {
		c.Measurements["pcr"+strconv.Itoa(int(i))] = clone(v)
	}
	if debug {
		c.Warnings = append(c.Warnings, "debug-mode enclave: its memory is readable by the parent instance")
	}
	return c, nil
}

func isZero(b []byte) bool {
	return len(b) > 0 && bytes.Count(b, []byte{0}) == len(b)
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}
