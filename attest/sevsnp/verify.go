package sevsnp

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/validate"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/roots"
)

// ReportSize is the size of a raw SEV-SNP attestation report.
const ReportSize = abi.ReportSize

// Verifier verifies SEV-SNP reports. The zero value is ready to use.
type Verifier struct{}

func init() { attest.Register(Verifier{}) }

// Class returns attest.ClassSEVSNP.
func (Verifier) Class() attest.Class { return attest.ClassSEVSNP }

// Sniff reports whether data looks like a raw SEV-SNP report (optionally
// followed by a certificate table): the right size, a known version, the
// ECDSA-P384 signature algorithm and reserved fields zero.
func Sniff(data []byte) bool {
	if len(data) < ReportSize {
		return false
	}
	v := binary.LittleEndian.Uint32(data[0:4])
	if v < 2 || v > 5 || abi.SignatureAlgo(data) != abi.SignEcdsaP384Sha384 {
		return false
	}
	if len(data) > ReportSize {
		var ct abi.CertTable
		if ct.Unmarshal(data[ReportSize:]) != nil {
			return false
		}
	}
	_, err := abi.ReportToProto(data[:ReportSize])
	return err == nil
}

// Verify checks an SEV-SNP report's signature and certificate chain as of
// opts.Time() and returns its claims. See the package documentation for
// what Evidence must contain.
func (Verifier) Verify(_ context.Context, ev *attest.Evidence, opts attest.VerifyOptions) (*attest.Claims, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: sev-snp: no evidence", attest.ErrMalformed)
	}
	if len(ev.Data) < ReportSize {
		return nil, fmt.Errorf("%w: sev-snp report is %d bytes, want %d", attest.ErrMalformed, len(ev.Data), ReportSize)
	}
	raw := ev.Data[:ReportSize]
	items := ev.Collateral
	if len(ev.Data) > ReportSize {
		var ct abi.CertTable
		if err := ct.Unmarshal(ev.Data[ReportSize:]); err != nil {
			return nil, fmt.Errorf("%w: sev-snp: %d bytes after the report are not a certificate table: %v", attest.ErrMalformed, len(ev.Data)-ReportSize, err)
		}
		chain := ct.Proto()
		items = append([][]byte(nil), items...)
		for _, der := range [][]byte{chain.GetVcekCert(), chain.GetVlekCert(), chain.GetAskCert(), chain.GetArkCert()} {
			if len(der) > 0 {
				items = append(items, der)
			}
		}
	}
	if err := abi.ValidateReportFormat(raw); err != nil {
		return nil, fmt.Errorf("%w: sev-snp report: %v", attest.ErrMalformed, err)
	}
	report, err := abi.ReportToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: sev-snp report: %v", attest.ErrMalformed, err)
	}
	if report.GetVersion() < 2 {
		return nil, fmt.Errorf("%w: sev-snp report version %d, want 2 or later", attest.ErrMalformed, report.GetVersion())
	}
	info, err := abi.ParseSignerInfo(report.GetSignerInfo())
	if err != nil {
		return nil, fmt.Errorf("%w: sev-snp signer info: %v", attest.ErrMalformed, err)
	}
	col, err := parseCollateral(items)
	if err != nil {
		return nil, fmt.Errorf("%w: sev-snp %v", attest.ErrMalformed, err)
	}
	now := opts.Time()

	// The endorsement key certificate: the one whose key signed the report.
	wantCN := "SEV-VCEK"
	if info.SigningKey == abi.VlekReportSigner {
		wantCN = "SEV-VLEK"
	}
	var candidates []*x509.Certificate
	for _, c := range col.endorsement {
		if c.Subject.CommonName == wantCN {
			candidates = append(candidates, c)
		}
	}
	if len(candidates) == 0 {
		return nil, fmt.Errorf("%w: sev-snp report is signed by the %s but no %s certificate was given in the collateral (offline verification needs it)", attest.ErrChain, info.SigningKey, wantCN)
	}
	ek := candidates[0]
	if len(candidates) > 1 {
		// Pick the one whose key signed the report. With a single
		// candidate go-sev-guest checks the signature below, and a
		// failure is classified afterwards (P-384 verification is the
		// dominant cost; doing it once matters).
		ek = nil
		var sigErr error
		for _, c := range candidates {
			if sigErr = verify.SnpReportSignature(raw, c); sigErr == nil {
				ek = c
				break
			}
		}
		if ek == nil {
			return nil, fmt.Errorf("%w: sev-snp report: %v", attest.ErrSignature, sigErr)
		}
	}
	if err := checkWindow(ek, now); err != nil {
		return nil, err
	}

	roots, arks, asks := trustedRoots(col, opts)
	attestation := &spb.Attestation{Report: report, CertificateChain: &spb.CertificateChain{Extras: map[string][]byte{}}}
	if info.SigningKey == abi.VlekReportSigner {
		attestation.CertificateChain.VlekCert = ek.Raw
	} else {
		attestation.CertificateChain.VcekCert = ek.Raw
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("%w: sev-snp: no trusted AMD root (ARK) available", attest.ErrChain)
	}
	if err := verify.SnpAttestation(attestation, &verify.Options{DisableCertFetching: true, Now: now, TrustedRoots: roots}); err != nil {
		if serr := verify.SnpReportSignature(raw, ek); serr != nil {
			return nil, fmt.Errorf("%w: sev-snp report: %v", attest.ErrSignature, serr)
		}
		for _, c := range append(asks, arks...) {
			if c.Subject.String() == ek.Issuer.String() || c.Subject.String() == asksIssuer(asks, ek) {
				if werr := checkWindow(c, now); werr != nil {
					return nil, fmt.Errorf("%w (chain: %v)", werr, err)
				}
			}
		}
		return nil, fmt.Errorf("%w: sev-snp %s: %v", attest.ErrChain, wantCN, err)
	}
	var warnings []string
	if len(col.crls) == 0 {
		warnings = append(warnings, "no AMD CRL given: revocation of the VCEK and ASK was not checked")
	} else if err := checkCRLs(col.crls, arks, ek, issuerOf(ek, asks), now); err != nil {
		return nil, err
	}

	// The report must describe the machine its certificate was issued to.
	permissive := validate.Options{
		GuestPolicy:               abi.SnpPolicy{ABIMajor: 0, ABIMinor: 0, SMT: true, MigrateMA: true, Debug: true, CXLAllowed: true},
		PermitProvisionalFirmware: true,
	}
	if err := validate.SnpAttestation(attestation, &permissive); err != nil {
		return nil, fmt.Errorf("%w: sev-snp report disagrees with its %s: %v", attest.ErrChain, wantCN, err)
	}

	policy, err := abi.ParseSnpPolicy(report.GetPolicy())
	if err != nil {
		return nil, fmt.Errorf("%w: sev-snp guest policy: %v", attest.ErrMalformed, err)
	}
	claims := claimsOf(report, policy, ek, warnings)
	if policy.Debug && !opts.AllowDebug {
		return nil, fmt.Errorf("%w: sev-snp guest policy 0x%x allows debugging (bit 19): the hypervisor can read and change guest memory", attest.ErrDebug, report.GetPolicy())
	}
	return claims, nil
}

func asksIssuer(asks []*x509.Certificate, ek *x509.Certificate) string {
	if a := issuerOf(ek, asks); a != nil {
		return a.Issuer.String()
	}
	return ""
}

func issuerOf(c *x509.Certificate, candidates []*x509.Certificate) *x509.Certificate {
	for _, p := range candidates {
		if c.CheckSignatureFrom(p) == nil {
			return p
		}
	}
	return nil
}

func checkWindow(c *x509.Certificate, now time.Time) error {
	if now.Before(c.NotBefore) || now.After(c.NotAfter) {
		return fmt.Errorf("%w: sev-snp certificate %q is valid %s..%s, verification time is %s", attest.ErrExpired,
			c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// trustedRoots pairs every trusted ARK with every intermediate of its
// product line, in go-sev-guest's shape. It also returns the ARKs and
// intermediates considered.
func trustedRoots(col *collateral, opts attest.VerifyOptions) (map[string][]*trust.AMDRootCerts, []*x509.Certificate, []*x509.Certificate) {
	var arks, asks []*x509.Certificate
	if !opts.ReplaceRoots {
		// Milan and Genoa from Cloister's own embedded roots; Turin, which
		// those do not carry yet, from go-sev-guest's embedded copy.
		for _, pair := range [][]*x509.Certificate{roots.AMDMilan(), roots.AMDGenoa()} {
			asks = append(asks, pair[0])
			arks = append(arks, pair[1])
		}
		if r, err := trust.GetDefaultRootCerts("Turin"); err == nil && r.ProductCerts != nil && r.ProductCerts.Ark != nil {
			arks = append(arks, r.ProductCerts.Ark)
			for _, c := range []*x509.Certificate{r.ProductCerts.Ask, r.ProductCerts.Asvk} {
				if c != nil {
					asks = append(asks, c)
				}
			}
		}
	}
	for _, r := range opts.Roots {
		if productLineOf(r) != "" {
			arks = append(arks, r)
		}
	}
	// An ARK in the collateral counts only if it is byte-identical to a
	// trusted one; it adds nothing then, so it is ignored.
	asks = append(asks, col.ask...)
	out := map[string][]*trust.AMDRootCerts{}
	for _, ark := range arks {
		line := productLineOf(ark)
		for _, ica := range asks {
			if productLineOf(ica) != line {
				continue
			}
			pc := &trust.ProductCerts{Ark: ark}
			if bytes.HasPrefix([]byte(ica.Subject.CommonName), []byte("SEV-VLEK-")) {
				pc.Asvk = ica
			} else {
				pc.Ask = ica
			}
			out[line] = append(out[line], &trust.AMDRootCerts{Product: line, ProductLine: line, ProductCerts: pc})
		}
	}
	return out, arks, asks
}

// checkCRLs requires every CRL to be signed by a trusted ARK and current,
// and neither the endorsement key certificate nor its ASK to be listed.
func checkCRLs(crls []*x509.RevocationList, arks []*x509.Certificate, ek, ask *x509.Certificate, now time.Time) error {
	for i, crl := range crls {
		signed := false
		for _, ark := range arks {
			if crl.CheckSignatureFrom(ark) == nil {
				signed = true
				break
			}
		}
		if !signed {
			return fmt.Errorf("%w: sev-snp CRL %d (issuer %q) is not signed by a trusted ARK", attest.ErrChain, i, crl.Issuer.CommonName)
		}
		if now.Before(crl.ThisUpdate) || (!crl.NextUpdate.IsZero() && now.After(crl.NextUpdate)) {
			return fmt.Errorf("%w: sev-snp CRL %d is valid %s..%s", attest.ErrExpired, i, crl.ThisUpdate.UTC().Format(time.RFC3339), crl.NextUpdate.UTC().Format(time.RFC3339))
		}
		for _, e := range crl.RevokedCertificateEntries {
			for _, c := range []*x509.Certificate{ek, ask} {
				if c != nil && c.SerialNumber.Cmp(e.SerialNumber) == 0 && c.Issuer.String() == crl.Issuer.String() {
					return fmt.Errorf("%w: sev-snp certificate %q (serial %s) is on the AMD CRL since %s", attest.ErrRevoked, c.Subject.CommonName, c.SerialNumber, e.RevocationTime.UTC().Format(time.RFC3339))
				}
			}
		}
	}
	return nil
}

func claimsOf(r *spb.Report, policy abi.SnpPolicy, ek *x509.Certificate, warnings []string) *attest.Claims {
	svn := svnOf(r)
	vmpl := r.GetVmpl()
	if policy.SMT {
		warnings = append(warnings, "guest policy allows SMT (simultaneous multithreading)")
	}
	if policy.MigrateMA {
		warnings = append(warnings, "guest policy allows a migration agent")
	}
	return &attest.Claims{
		Class:       attest.ClassSEVSNP,
		Format:      fmt.Sprintf("sev-snp-report-v%d", r.GetVersion()),
		Measurement: r.GetMeasurement(),
		Measurements: map[string][]byte{
			"measurement":       r.GetMeasurement(),
			"host_data":         r.GetHostData(),
			"family_id":         r.GetFamilyId(),
			"image_id":          r.GetImageId(),
			"chip_id":           r.GetChipId(),
			"report_id":         r.GetReportId(),
			"id_key_digest":     r.GetIdKeyDigest(),
			"author_key_digest": r.GetAuthorKeyDigest(),
		},
		ReportData:        r.GetReportData(),
		HardwareProtected: true,
		Debug:             policy.Debug,
		VMPL:              &vmpl,
		Advisories:        []string{},
		SVN:               svn,
		Signer:            ek.Subject.CommonName + " " + hex.EncodeToString(r.GetChipId()[:8]),
		Warnings:          warnings,
		Extra: map[string]any{
			"policy":        fmt.Sprintf("0x%x", r.GetPolicy()),
			"vmpl":          r.GetVmpl(),
			"version":       r.GetVersion(),
			"platform_info": fmt.Sprintf("0x%x", r.GetPlatformInfo()),
			"reported_tcb":  fmt.Sprintf("0x%016x", r.GetReportedTcb()),
			"current_tcb":   fmt.Sprintf("0x%016x", r.GetCurrentTcb()),
			"firmware":      fmt.Sprintf("%d.%d build %d", r.GetCurrentMajor(), r.GetCurrentMinor(), r.GetCurrentBuild()),
		},
	}
}

// svnOf splits REPORTED_TCB into its components. Turin (known from the
// CPUID family/model in v3+ reports) lays TCB_VERSION out differently:
// FMC, bootloader, TEE and SNP in bytes 0–3, microcode in byte 7.
func svnOf(r *spb.Report) map[string]uint64 {
	tcb := r.GetReportedTcb()
	out := map[string]uint64{"guest_svn": uint64(r.GetGuestSvn())}
	if fms := r.GetCpuid1EaxFms(); fms != 0 && kds.ProductLineFromFms(fms) == "Turin" {
		out["fmc"] = tcb & 0xff
		out["bootloader"] = (tcb >> 8) & 0xff
		out["tee"] = (tcb >> 16) & 0xff
		out["snp"] = (tcb >> 24) & 0xff
		out["microcode"] = tcb >> 56
		return out
	}
	parts := kds.DecomposeTCBVersion(kds.TCBVersion(tcb))
	out["bootloader"] = uint64(parts.BlSpl)
	out["tee"] = uint64(parts.TeeSpl)
	out["snp"] = uint64(parts.SnpSpl)
	out["microcode"] = uint64(parts.UcodeSpl)
	return out
}
