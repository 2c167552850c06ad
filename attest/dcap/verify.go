package dcap

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/roots"
)

// Result is a verified quote and what the collateral says about it.
type Result struct {
	Quote  *Quote
	PCK    *x509.Certificate
	PCKExt *PCKExtensions

	// Collateral is true when TCB info, QE identity and CRLs were checked;
	// the fields below are set only then.
	Collateral   bool
	TCBStatus    string // merged platform, QE and TDX module status
	Advisories   []string
	TCBDate      time.Time
	PlatformTCB  string
	QETCB        string
	TDXModuleTCB string
	Warnings     []string
}

// Verify checks a DCAP quote as of opts.Time():
//
//   - the PCK certificate chain in the quote up to a trusted Intel SGX Root
//     CA (built in unless opts.ReplaceRoots, plus opts.Roots);
//   - the QE report's ECDSA-P256 signature by the PCK key, and that its
//     report data is SHA-256(attestation key ‖ QE auth data) ‖ 32 zeros;
//   - the quote signature over header and body by the attestation key.
//
// With collateral it also checks both CRLs (signatures, windows, the PCK
// and its CA not revoked; the PCK CRL is checked against the CA that the
// verified PCK chain names, so pck_crl_issuer_chain is parsed but not
// needed), the TCB info and QE identity (signing chain to
// the same root, ECDSA signature over the exact JSON text, issueDate ≤ now
// ≤ nextUpdate), that the QE is Intel's (MRSIGNER, ISVPRODID, masked
// MISCSELECT and attributes), the FMSPC and PCE ID, and derives the TCB
// status: the first platform TCB level whose 16 SGX component SVNs and
// PCESVN (from the PCK certificate) — and for TDX the TEE TCB SVNs from the
// TD report — are all at least the level's, merged with the QE's level
// (by ISVSVN) and, for TDX modules 1.5+, the TDX module identity's level.
//
// Errors wrap attest.ErrMalformed, ErrChain, ErrSignature, ErrExpired,
// ErrRevoked or ErrTCB. Debug is not judged here.
func Verify(raw []byte, col *Collateral, opts attest.VerifyOptions) (*Result, error) {
	q, err := ParseQuote(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", attest.ErrMalformed, err)
	}
	now := opts.Time()
	pool := trustedRoots(opts)
	if len(pool) == 0 {
		return nil, fmt.Errorf("%w: no trusted Intel SGX root CA", attest.ErrChain)
	}

	// 1. PCK chain from the quote.
	pckPath, err := verifyChain("PCK certificate chain in the quote", q.PCKChain, pool, now)
	if err != nil {
		return nil, err
	}
	pck := pckPath[0]
	res := &Result{Quote: q, PCK: pck}
	if q.Trailing > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d bytes after the quote are not covered by its signature and were ignored", q.Trailing))
	}
	if res.PCKExt, err = ParsePCKExtensions(pck); err != nil {
		return nil, fmt.Errorf("%w: %v", attest.ErrMalformed, err)
	}

	// 2. QE report signed by the PCK, binding the attestation key.
	pckKey, ok := pck.PublicKey.(*ecdsa.PublicKey)
	if !ok || pckKey.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: PCK certificate key is not ECDSA P-256", attest.ErrChain)
	}
	if !verifyRS(pckKey, q.QEReport.Raw, q.QEReportSig[:]) {
		return nil, fmt.Errorf("%w: QE report signature does not verify with the PCK key", attest.ErrSignature)
	}
	h := sha256.New()
	h.Write(q.AttestKey[:])
	h.Write(q.QEAuthData)
	want := append(h.Sum(nil), make([]byte, 32)...)
	if !bytes.Equal(q.QEReport.ReportData[:], want) {
		return nil, fmt.Errorf("%w: QE report data is not SHA-256(attestation key ‖ QE auth data) ‖ zeros: the attestation key is not the QE's", attest.ErrSignature)
	}

	// 3. Quote signed by the attestation key.
	ak, err := p256Key(q.AttestKey[:])
	if err != nil {
		return nil, fmt.Errorf("%w: attestation key: %v", attest.ErrMalformed, err)
	}
	if !verifyRS(ak, q.SignedData, q.Signature[:]) {
		return nil, fmt.Errorf("%w: quote signature over header and report does not verify with the attestation key", attest.ErrSignature)
	}

	if col == nil {
		res.Warnings = append(res.Warnings, "no DCAP collateral: TCB status, revocation (PCK CRL) and the quoting enclave's identity were not checked")
		return res, nil
	}
	if err := res.checkCollateral(col, pckPath, pool, now); err != nil {
		return nil, err
	}
	return res, nil
}

func trustedRoots(opts attest.VerifyOptions) []*x509.Certificate {
	var out []*x509.Certificate
	if !opts.ReplaceRoots {
		out = append(out, roots.IntelSGXRoot())
	}
	return append(out, opts.Roots...)
}

// verifyChain verifies chain[0] up to one of roots (chain[1:] are
// intermediates) and returns the path, leaf first, root last.
func verifyChain(what string, chain []*x509.Certificate, roots []*x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: %s is empty", attest.ErrChain, what)
	}
	rp := x509.NewCertPool()
	for _, r := range roots {
		rp.AddCert(r)
	}
	ip := x509.NewCertPool()
	for _, c := range chain[1:] {
		ip.AddCert(c)
	}
	paths, err := chain[0].Verify(x509.VerifyOptions{Roots: rp, Intermediates: ip, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			return nil, fmt.Errorf("%w: %s: %v", attest.ErrExpired, what, err)
		}
		for _, c := range chain {
			if now.Before(c.NotBefore) || now.After(c.NotAfter) {
				return nil, fmt.Errorf("%w: %s: certificate %q is valid %s..%s, verification time %s", attest.ErrExpired, what,
					c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
			}
		}
		return nil, fmt.Errorf("%w: %s: %v", attest.ErrChain, what, err)
	}
	return paths[0], nil
}

func p256Key(xy []byte) (*ecdsa.PublicKey, error) {
	if len(xy) != 64 {
		return nil, fmt.Errorf("%d bytes, want 64", len(xy))
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, xy...))
	if err != nil {
		return nil, err
	}
	return pub, nil
}

// verifyRS checks a raw r||s ECDSA-P256 signature over SHA-256(msg).
func verifyRS(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	if len(sig) != 64 {
		return false
	}
	d := sha256.Sum256(msg)
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, d[:], r, s)
}

func (res *Result) checkCollateral(col *Collateral, pckPath, roots []*x509.Certificate, now time.Time) error {
	q := res.Quote
	root := pckPath[len(pckPath)-1]
	// CRLs: the root CA CRL is signed by the root, the PCK CRL by the CA
	// that issued the PCK (Platform or Processor CA).
	if err := checkCRL("root CA CRL", col.RootCACRL, root, now); err != nil {
		return err
	}
	if len(pckPath) < 3 {
		return fmt.Errorf("%w: PCK chain has no intermediate CA", attest.ErrChain)
	}
	pckCA := pckPath[1]
	if err := checkCRL("PCK CRL", col.PCKCRL, pckCA, now); err != nil {
		return err
	}
	if err := notRevoked(col.PCKCRL, res.PCK); err != nil {
		return err
	}
	for _, c := range pckPath[1 : len(pckPath)-1] {
		if err := notRevoked(col.RootCACRL, c); err != nil {
			return err
		}
	}

	// TCB info.
	ti := col.TCBInfo
	if err := checkSignedBody("TCB info", col.TCBInfoRaw, col.TCBInfoSignature, col.TCBInfoIssuerChain, roots, col.RootCACRL, now); err != nil {
		return err
	}
	if err := window("TCB info", ti.IssueDate, ti.NextUpdate, now); err != nil {
		return err
	}
	wantID := "SGX"
	if q.IsTDX() {
		wantID = "TDX"
	}
	if ti.ID != wantID {
		return fmt.Errorf("%w: TCB info is for %s, the quote is %s", attest.ErrTCB, ti.ID, wantID)
	}
	if !strings.EqualFold(ti.FMSPC, hex.EncodeToString(res.PCKExt.FMSPC)) {
		return fmt.Errorf("%w: TCB info is for FMSPC %s, the PCK certificate says %x", attest.ErrTCB, ti.FMSPC, res.PCKExt.FMSPC)
	}
	if !strings.EqualFold(ti.PCEID, hex.EncodeToString(res.PCKExt.PCEID)) {
		return fmt.Errorf("%w: TCB info is for PCE ID %s, the PCK certificate says %x", attest.ErrTCB, ti.PCEID, res.PCKExt.PCEID)
	}

	// QE identity.
	qi := col.QEIdentity
	if err := checkSignedBody("QE identity", col.QEIdentityRaw, col.QEIdentitySignature, col.QEIdentityIssuerChain, roots, col.RootCACRL, now); err != nil {
		return err
	}
	if err := window("QE identity", qi.IssueDate, qi.NextUpdate, now); err != nil {
		return err
	}
	wantQE := "QE"
	if q.IsTDX() {
		wantQE = "TD_QE"
	}
	if qi.ID != wantQE {
		return fmt.Errorf("%w: QE identity is %q, a %s quote needs %q", attest.ErrTCB, qi.ID, wantID, wantQE)
	}
	qeLevel, err := qeIdentityLevel(qi, q.QEReport)
	if err != nil {
		return err
	}

	// Platform TCB level.
	pl, err := platformLevel(ti, res.PCKExt, q)
	if err != nil {
		return err
	}
	res.Collateral = true
	res.PlatformTCB = pl.TCBStatus
	res.TCBDate = pl.TCBDate
	res.QETCB = qeLevel.TCBStatus
	status := ConvergeTCBStatus(pl.TCBStatus, qeLevel.TCBStatus)
	adv := append(slices.Clone(pl.AdvisoryIDs), qeLevel.AdvisoryIDs...)

	if q.IsTDX() {
		ml, err := tdxModuleLevel(ti, q.TD)
		if err != nil {
			return err
		}
		if ml != nil {
			res.TDXModuleTCB = ml.TCBStatus
			status = ConvergeTCBStatus(status, ml.TCBStatus)
			adv = append(adv, ml.AdvisoryIDs...)
		}
	}
	res.TCBStatus = status
	res.Advisories = MergeAdvisories(adv)
	if status == "Revoked" {
		return fmt.Errorf("%w: platform TCB status is Revoked (platform %s, QE %s)", attest.ErrRevoked, pl.TCBStatus, qeLevel.TCBStatus)
	}
	return nil
}

func checkCRL(what string, crl *x509.RevocationList, issuer *x509.Certificate, now time.Time) error {
	if crl == nil {
		return fmt.Errorf("%w: %s missing", attest.ErrMalformed, what)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("%w: %s is not signed by %q: %v", attest.ErrChain, what, issuer.Subject.CommonName, err)
	}
	return window(what, crl.ThisUpdate, crl.NextUpdate, now)
}

func notRevoked(crl *x509.RevocationList, c *x509.Certificate) error {
	if !bytes.Equal(crl.RawIssuer, c.RawIssuer) {
		return nil
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
			return fmt.Errorf("%w: certificate %q (serial %x) was revoked at %s", attest.ErrRevoked, c.Subject.CommonName, c.SerialNumber, e.RevocationTime.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

func window(what string, from, until time.Time, now time.Time) error {
	if now.Before(from) || (!until.IsZero() && now.After(until)) {
		return fmt.Errorf("%w: %s is valid %s..%s, verification time %s", attest.ErrExpired, what,
			from.UTC().Format(time.RFC3339), until.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// checkSignedBody verifies an Intel-signed JSON body: its signing chain to
// a trusted root, the signer not revoked by the root CA CRL, and the raw
// r||s signature over the exact text.
func checkSignedBody(what string, body, sig []byte, chain, roots []*x509.Certificate, rootCRL *x509.RevocationList, now time.Time) error {
	path, err := verifyChain(what+" signing chain", chain, roots, now)
	if err != nil {
		return err
	}
	if err := notRevoked(rootCRL, path[0]); err != nil {
		return err
	}
	key, ok := path[0].PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		return fmt.Errorf("%w: %s signing key is not ECDSA P-256", attest.ErrChain, what)
	}
	if !verifyRS(key, body, sig) {
		return fmt.Errorf("%w: %s signature does not verify with %q", attest.ErrSignature, what, path[0].Subject.CommonName)
	}
	return nil
}

func qeIdentityLevel(qi *QEIdentity, r *EnclaveReport) (*IdentityLevel, error) {
	ms := make([]byte, 4)
	ms[0], ms[1], ms[2], ms[3] = byte(r.MiscSelect), byte(r.MiscSelect>>8), byte(r.MiscSelect>>16), byte(r.MiscSelect>>24)
	// The identity's hex strings are little-endian byte dumps, as in the report.
	if !maskedEqual(ms, qi.MiscSelect, qi.MiscSelectMask) {
		return nil, fmt.Errorf("%w: quoting enclave MISCSELECT %x does not match the QE identity", attest.ErrChain, ms)
	}
	if !maskedEqual(r.Attributes[:], qi.Attributes, qi.AttributesMask) {
		return nil, fmt.Errorf("%w: quoting enclave attributes %x do not match the QE identity", attest.ErrChain, r.Attributes)
	}
	if !bytes.Equal(r.MRSIGNER[:], qi.MRSIGNER) {
		return nil, fmt.Errorf("%w: quoting enclave MRSIGNER %x is not Intel's %x", attest.ErrChain, r.MRSIGNER, []byte(qi.MRSIGNER))
	}
	if int(r.ISVProdID) != qi.ISVProdID {
		return nil, fmt.Errorf("%w: quoting enclave ISVPRODID %d, QE identity says %d", attest.ErrChain, r.ISVProdID, qi.ISVProdID)
	}
	for i := range qi.TCBLevels {
		if int(r.ISVSVN) >= qi.TCBLevels[i].TCB.ISVSVN {
			return &qi.TCBLevels[i], nil
		}
	}
	return nil, fmt.Errorf("%w: quoting enclave ISVSVN %d is below every QE identity TCB level", attest.ErrTCB, r.ISVSVN)
}

func maskedEqual(v, want, mask []byte) bool {
	if len(v) != len(want) || len(v) != len(mask) {
		return false
	}
	for i := range v {
		if v[i]&mask[i] != want[i]&mask[i] {
			return false
		}
	}
	return true
}

// platformLevel finds the first TCB level the platform meets. Components
// are compared one by one, as Intel's verification library does.
func platformLevel(ti *TCBInfo, ext *PCKExtensions, q *Quote) (*PlatformLevel, error) {
	tdxStart := 0
	if q.TD != nil && q.TD.TEETCBSVN[1] > 0 {
		// TDX module 1.5+: the first two TEE TCB SVN bytes are the module's
		// SVN and major version, judged by the module identity instead.
		tdxStart = 2
	}
levels:
	for i := range ti.TCBLevels {
		l := &ti.TCBLevels[i]
		for c := range 16 {
			if int(ext.CompSVN[c]) < l.TCB.SGXComponents[c].SVN {
				continue levels
			}
		}
		if int(ext.PCESVN) < l.TCB.PCESVN {
			continue
		}
		if q.TD != nil {
			for c := tdxStart; c < 16; c++ {
				if int(q.TD.TEETCBSVN[c]) < l.TCB.TDXComponents[c].SVN {
					continue levels
				}
			}
		}
		return l, nil
	}
	return nil, fmt.Errorf("%w: no matching TCB level found (FMSPC %s, PCESVN %d, SGX components %v)", attest.ErrTCB, ti.FMSPC, ext.PCESVN, ext.CompSVN)
}

// tdxModuleLevel checks the TDX module's signer and attributes against the
// TCB info and, for modules with an identity (TEE TCB SVN[1] > 0), returns
// the identity's TCB level for the module SVN.
func tdxModuleLevel(ti *TCBInfo, td *TDReport) (*IdentityLevel, error) {
	if ti.TDXModule == nil {
		return nil, fmt.Errorf("%w: TDX TCB info has no tdxModule", attest.ErrMalformed)
	}
	check := func(m *TDXModule, name string) error {
		if !bytes.Equal(m.MRSIGNER, td.MRSIGNERSEAM[:]) {
			return fmt.Errorf("%w: TDX module MRSIGNERSEAM %x does not match %s", attest.ErrTCB, td.MRSIGNERSEAM, name)
		}
		if !maskedEqual(td.SEAMAttributes[:], m.Attributes, m.AttributesMask) {
			return fmt.Errorf("%w: TDX module attributes %x do not match %s", attest.ErrTCB, td.SEAMAttributes, name)
		}
		return nil
	}
	if td.TEETCBSVN[1] == 0 {
		return nil, check(ti.TDXModule, "the TCB info's tdxModule")
	}
	id := fmt.Sprintf("TDX_%02X", td.TEETCBSVN[1])
	for i := range ti.TDXModuleIdentities {
		mi := &ti.TDXModuleIdentities[i]
		if !strings.EqualFold(mi.ID, id) {
			continue
		}
		if err := check(&mi.TDXModule, "module identity "+id); err != nil {
			return nil, err
		}
		for j := range mi.TCBLevels {
			if int(td.TEETCBSVN[0]) >= mi.TCBLevels[j].TCB.ISVSVN {
				return &mi.TCBLevels[j], nil
			}
		}
		return nil, fmt.Errorf("%w: TDX module %s SVN %d is below every TCB level of its identity", attest.ErrTCB, id, td.TEETCBSVN[0])
	}
	return nil, fmt.Errorf("%w: TCB info has no TDX module identity %s", attest.ErrTCB, id)
}

// ConvergeTCBStatus merges a platform TCB status with the QE's or TDX
// module's, as Intel's verification library does: an out-of-date component
// makes the whole out of date, a revoked one revokes it. (Package tdx uses
// it for go-tdx-guest's results.)
func ConvergeTCBStatus(platform, component string) string {
	switch component {
	case "Revoked":
		return "Revoked"
	case "OutOfDate":
		switch platform {
		case "UpToDate", "SWHardeningNeeded":
			return "OutOfDate"
		case "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded":
			return "OutOfDateConfigurationNeeded"
		}
	}
	return platform
}

// MergeAdvisories lists the advisory ids of every list once, in order of
// first appearance.
func MergeAdvisories(lists ...[]string) []string {
	out := []string{}
	for _, l := range lists {
		for _, s := range l {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}
