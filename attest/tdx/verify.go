package tdx

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/dcap"
	"github.com/cloisterhq/cloister/attest/roots"
)

// Verifier verifies TDX quotes. The zero value is ready to use.
type Verifier struct{}

func init() { attest.Register(Verifier{}) }

// Class returns attest.ClassTDX.
func (Verifier) Class() attest.Class { return attest.ClassTDX }

// Sniff reports whether data looks like a TDX quote.
func Sniff(data []byte) bool {
	return dcap.Sniff(data) && len(data) >= 8 && data[4] == 0x81 && data[5] == 0 && data[6] == 0 && data[7] == 0
}

// Verify checks a TDX quote with its collateral as of opts.Time(). See the
// package documentation for the accepted collateral.
func (Verifier) Verify(ctx context.Context, ev *attest.Evidence, opts attest.VerifyOptions) (*attest.Claims, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: tdx: no evidence", attest.ErrMalformed)
	}
	if slices.ContainsFunc(ev.Collateral, dcap.IsCollateralJSON) || len(ev.Collateral) == 0 {
		return dcap.VerifyEvidence(ev, opts, true)
	}
	pcsCol, err := parsePCSCollateral(ev.Collateral)
	if err != nil {
		return nil, err
	}
	// Quote signature, QE report and PCK chain, with precise error kinds.
	res, err := dcap.Verify(ev.Data, nil, opts)
	if err != nil {
		return nil, err
	}
	if !res.Quote.IsTDX() {
		return nil, fmt.Errorf("%w: this is an SGX quote, not TDX", attest.ErrMalformed)
	}
	if res.Quote.Version != 4 {
		col, err := pcsCol.toDCAP()
		if err != nil {
			return nil, err
		}
		return dcap.VerifyEvidenceWith(ev.Data, col, opts, true)
	}
	quote, err := abi.QuoteToProto(ev.Data)
	if err != nil {
		return nil, fmt.Errorf("%w: tdx quote: %v", attest.ErrMalformed, err)
	}
	q4, ok := quote.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("%w: tdx quote: unexpected format %T", attest.ErrMalformed, quote)
	}
	now := opts.Time()
	pool := x509.NewCertPool()
	if !opts.ReplaceRoots {
		pool.AddCert(roots.IntelSGXRoot())
	}
	for _, r := range opts.Roots {
		pool.AddCert(r)
	}
	vo := &verify.Options{
		GetCollateral:    pcsCol.tcbInfo != nil,
		CheckRevocations: pcsCol.pckCRL != nil,
		Getter:           pcsCol,
		Now:              &verify.TimeSet{PckCertChain: now, TcbInfo: now, QeIdentity: now, PckCrl: now, RootCaCrl: now},
		TrustedRoots:     pool,
	}
	if err := verify.TdxQuoteContext(ctx, q4, vo); err != nil {
		return nil, classify(err)
	}
	c := res.Claims()
	if pcsCol.tcbInfo != nil {
		platform, qe, err := verify.SupportedTcbLevelsFromCollateral(q4, vo)
		if err != nil {
			return nil, classify(err)
		}
		c.TCBStatus = dcap.ConvergeTCBStatus(string(platform.TcbStatus), string(qe.TcbStatus))
		c.Advisories = dcap.MergeAdvisories(platform.AdvisoryIDs, qe.AdvisoryIDs)
		c.Extra["platform_tcb_status"] = string(platform.TcbStatus)
		c.Extra["qe_tcb_status"] = string(qe.TcbStatus)
		c.Extra["tcb_date"] = platform.TcbDate
		c.Warnings = slices.DeleteFunc(c.Warnings, func(w string) bool { return strings.Contains(w, "no DCAP collateral") })
		if pcsCol.pckCRL == nil {
			c.Warnings = append(c.Warnings, "no PCK CRL and root CA CRL given: revocation was not checked")
		}
		if c.TCBStatus == "Revoked" {
			return nil, fmt.Errorf("%w: tdx platform TCB status is Revoked", attest.ErrRevoked)
		}
	}
	if c.Debug && !opts.AllowDebug {
		return nil, fmt.Errorf("%w: TD attributes %x have DEBUG (bit 0) set: the host can read and change the TD", attest.ErrDebug, res.Quote.TD.TDAttributes)
	}
	return c, nil
}

// classify maps go-tdx-guest's errors (which are mostly formatted text)
// onto the attest error kinds.
func classify(err error) error {
	msg := err.Error()
	low := strings.ToLower(msg)
	kind := attest.ErrChain
	switch {
	case errors.Is(err, verify.ErrTcbInfoExpired), errors.Is(err, verify.ErrQeIdentityExpired),
		strings.Contains(low, "expired"), strings.Contains(low, "not yet valid"):
		kind = attest.ErrExpired
	case strings.Contains(low, "no matching"), strings.Contains(low, "tcb status"):
		kind = attest.ErrTCB
	case strings.Contains(low, "revoked"):
		kind = attest.ErrRevoked
	case strings.Contains(low, "signature"), strings.Contains(low, "could not verify response body"):
		kind = attest.ErrSignature
	case strings.Contains(low, "unmarshal"), strings.Contains(low, "missing"), strings.Contains(low, "empty"):
		kind = attest.ErrMalformed
	}
	return fmt.Errorf("%w: tdx (go-tdx-guest): %s", kind, msg)
}

// pcsCollateral holds Intel PCS responses and serves them to go-tdx-guest
// as if it had fetched them.
type pcsCollateral struct {
	tcbInfo, qeIdentity         []byte // whole responses
	tcbChain, qeChain, crlChain []*x509.Certificate
	pckCRL, rootCRL             []byte // DER
}

func parsePCSCollateral(items [][]byte) (*pcsCollateral, error) {
	p := &pcsCollateral{}
	set := func(dst *[]byte, v []byte, what string, i int) error {
		if *dst != nil {
			return fmt.Errorf("%w: tdx collateral item %d: a second %s", attest.ErrMalformed, i, what)
		}
		*dst = v
		return nil
	}
	for i, it := range items {
		t := bytes.TrimSpace(it)
		switch {
		case len(t) > 0 && t[0] == '{':
			var probe map[string]json.RawMessage
			if err := json.Unmarshal(t, &probe); err != nil {
				return nil, fmt.Errorf("%w: tdx collateral item %d: JSON: %v", attest.ErrMalformed, i, err)
			}
			switch {
			case probe["tcbInfo"] != nil && probe["signature"] != nil:
				if err := set(&p.tcbInfo, t, "TCB info response", i); err != nil {
					return nil, err
				}
			case probe["enclaveIdentity"] != nil && probe["signature"] != nil:
				if err := set(&p.qeIdentity, t, "QE identity response", i); err != nil {
					return nil, err
				}
			default:
				return nil, fmt.Errorf("%w: tdx collateral item %d: JSON that is neither a PCS TCB info nor a QE identity response", attest.ErrMalformed, i)
			}
		case bytes.HasPrefix(t, []byte("-----BEGIN X509 CRL")):
			blk, _ := pem.Decode(t)
			if blk == nil {
				return nil, fmt.Errorf("%w: tdx collateral item %d: bad PEM CRL", attest.ErrMalformed, i)
			}
			if err := p.addCRL(blk.Bytes, i); err != nil {
				return nil, err
			}
		case bytes.HasPrefix(t, []byte("-----BEGIN CERTIFICATE")):
			var chain []*x509.Certificate
			for rest := t; ; {
				var blk *pem.Block
				blk, rest = pem.Decode(rest)
				if blk == nil {
					if len(bytes.TrimSpace(rest)) != 0 {
						return nil, fmt.Errorf("%w: tdx collateral item %d: trailing data after PEM certificates", attest.ErrMalformed, i)
					}
					break
				}
				c, err := x509.ParseCertificate(blk.Bytes)
				if err != nil {
					return nil, fmt.Errorf("%w: tdx collateral item %d: %v", attest.ErrMalformed, i, err)
				}
				chain = append(chain, c)
			}
			if len(chain) == 1 && bytes.Equal(chain[0].RawIssuer, chain[0].RawSubject) {
				continue // a root: trust comes from VerifyOptions, not collateral
			}
			if len(chain) != 2 {
				return nil, fmt.Errorf("%w: tdx collateral item %d: an issuer chain must be signing certificate then root, got %d certificates", attest.ErrMalformed, i, len(chain))
			}
			switch cn := chain[0].Subject.CommonName; {
			case strings.Contains(cn, "TCB Signing"):
				// Intel signs TCB info and QE identity with the same key.
				p.tcbChain, p.qeChain = chain, chain
			case strings.Contains(cn, "PCK Platform CA"), strings.Contains(cn, "PCK Processor CA"):
				p.crlChain = chain
			default:
				return nil, fmt.Errorf("%w: tdx collateral item %d: issuer chain for %q is not one PCS uses", attest.ErrMalformed, i, cn)
			}
		default:
			if err := p.addCRL(it, i); err != nil {
				return nil, err
			}
		}
	}
	if (p.tcbInfo == nil) != (p.qeIdentity == nil) {
		return nil, fmt.Errorf("%w: tdx collateral: the TCB info and QE identity responses must be given together", attest.ErrMalformed)
	}
	if p.tcbInfo != nil && p.tcbChain == nil {
		return nil, fmt.Errorf("%w: tdx collateral: the TCB Signing issuer chain is missing", attest.ErrMalformed)
	}
	if (p.pckCRL == nil) != (p.rootCRL == nil) {
		return nil, fmt.Errorf("%w: tdx collateral: the PCK CRL and the root CA CRL must be given together", attest.ErrMalformed)
	}
	if p.pckCRL != nil && (p.crlChain == nil || p.tcbInfo == nil) {
		return nil, fmt.Errorf("%w: tdx collateral: CRLs need the PCK CRL issuer chain and the TCB info / QE identity responses", attest.ErrMalformed)
	}
	return p, nil
}

func (p *pcsCollateral) addCRL(der []byte, i int) error {
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return fmt.Errorf("%w: tdx collateral item %d is not a PCS response, issuer chain or CRL: %v", attest.ErrMalformed, i, err)
	}
	dst := &p.pckCRL
	if strings.Contains(crl.Issuer.CommonName, "Root CA") {
		dst = &p.rootCRL
	}
	if *dst != nil {
		return fmt.Errorf("%w: tdx collateral item %d: a second CRL from %q", attest.ErrMalformed, i, crl.Issuer.CommonName)
	}
	*dst = der
	return nil
}

func chainHeader(chain []*x509.Certificate) []string {
	var b bytes.Buffer
	for _, c := range chain {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return []string{url.QueryEscape(b.String())}
}

// Get serves the PCS responses from memory; any other URL is a 404.
func (p *pcsCollateral) Get(u string) (map[string][]string, []byte, error) {
	switch {
	case strings.HasPrefix(u, pcs.TdxBaseURL+"/tcb?") && p.tcbInfo != nil:
		return map[string][]string{pcs.TcbInfoIssuerChainPhrase: chainHeader(p.tcbChain)}, p.tcbInfo, nil
	case u == pcs.QeIdentityURL() && p.qeIdentity != nil:
		return map[string][]string{pcs.SgxQeIdentityIssuerChainPhrase: chainHeader(p.qeChain)}, p.qeIdentity, nil
	case strings.HasPrefix(u, pcs.SgxBaseURL+"/pckcrl?") && p.pckCRL != nil:
		return map[string][]string{pcs.SgxPckCrlIssuerChainPhrase: chainHeader(p.crlChain)}, p.pckCRL, nil
	case p.rootCRL != nil && strings.Contains(u, "RootCA"):
		return nil, p.rootCRL, nil
	}
	return nil, nil, fmt.Errorf("offline: no collateral for %s", u)
}

// toDCAP converts PCS responses into package dcap's collateral, for
// quotes go-tdx-guest cannot parse.
func (p *pcsCollateral) toDCAP() (*dcap.Collateral, error) {
	if p.tcbInfo == nil {
		return nil, nil
	}
	if p.pckCRL == nil {
		return nil, fmt.Errorf("%w: tdx collateral for a v5 quote needs the PCK CRL and root CA CRL too", attest.ErrMalformed)
	}
	var ti struct {
		TCBInfo   json.RawMessage `json:"tcbInfo"`
		Signature string          `json:"signature"`
	}
	var qi struct {
		EnclaveIdentity json.RawMessage `json:"enclaveIdentity"`
		Signature       string          `json:"signature"`
	}
	if err := json.Unmarshal(p.tcbInfo, &ti); err != nil {
		return nil, fmt.Errorf("%w: TCB info response: %v", attest.ErrMalformed, err)
	}
	if err := json.Unmarshal(p.qeIdentity, &qi); err != nil {
		return nil, fmt.Errorf("%w: QE identity response: %v", attest.ErrMalformed, err)
	}
	pemOf := func(chain []*x509.Certificate) string {
		s, _ := url.QueryUnescape(chainHeader(chain)[0])
		return s
	}
	hexOf := func(b []byte) string { return fmt.Sprintf("%x", b) }
	j, err := json.Marshal(map[string]string{
		"pck_crl_issuer_chain":     pemOf(p.crlChain),
		"root_ca_crl":              hexOf(p.rootCRL),
		"pck_crl":                  hexOf(p.pckCRL),
		"tcb_info_issuer_chain":    pemOf(p.tcbChain),
		"tcb_info":                 string(ti.TCBInfo),
		"tcb_info_signature":       ti.Signature,
		"qe_identity_issuer_chain": pemOf(p.qeChain),
		"qe_identity":              string(qi.EnclaveIdentity),
		"qe_identity_signature":    qi.Signature,
	})
	if err != nil {
		return nil, err
	}
	col, err := dcap.ParseCollateralJSON(j)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", attest.ErrMalformed, err)
	}
	return col, nil
}
