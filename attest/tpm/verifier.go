package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strconv"

	gattest "github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/cloisterhq/cloister/attest"
)

// NoMemoryProtectionWarning is attached to every set of TPM claims.
const NoMemoryProtectionWarning = "a TPM quote proves measured state, not isolation: the node operator can still read and alter the isolate's memory"

// Verifier checks TPM evidence: Cloister bundles and go-attestation JSON.
type Verifier struct{}

func init() { attest.Register(Verifier{}) }

// Class returns attest.ClassTPM.
func (Verifier) Class() attest.Class { return attest.ClassTPM }

// Verify checks the AK's trust, the quote signature, the PCR digest, the
// qualifying data, the runtime PCR and (when present) the event log. An event
// log may also be passed as the single item of ev.Collateral.
func (Verifier) Verify(ctx context.Context, ev *attest.Evidence, opts attest.VerifyOptions) (*attest.Claims, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: no evidence", attest.ErrMalformed)
	}
	if len(ev.Collateral) > 1 {
		return nil, fmt.Errorf("%w: TPM evidence takes at most one collateral item (an event log), got %d", attest.ErrMalformed, len(ev.Collateral))
	}
	if bytes.Contains(ev.Data[:min(len(ev.Data), 256)], []byte(Format)) {
		return verifyBundle(ev.Data, opts, ev.Collateral)
	}
	return verifyGoAttestation(ev.Data, opts, ev.Collateral)
}

func verifyBundle(data []byte, opts attest.VerifyOptions, collateral [][]byte) (*attest.Claims, error) {
	b, err := parseBundle(data)
	if err != nil {
		return nil, err
	}
	ak, err := ParseAK(b.AKPublic)
	if err != nil {
		return nil, err
	}
	var akCert *x509.Certificate
	if len(b.AKCertificate) > 0 {
		if akCert, err = x509.ParseCertificate(b.AKCertificate); err != nil {
			return nil, fmt.Errorf("%w: TPM AK certificate: %v", attest.ErrMalformed, err)
		}
	}
	var pool *x509.CertPool
	if len(opts.Roots) > 0 {
		pool = x509.NewCertPool()
		for _, r := range opts.Roots {
			pool.AddCert(r)
		}
	}
	if err := ak.Trusted(opts.TrustedKeys, akCert, pool, x509VerifyOptions(opts)); err != nil {
		return nil, err
	}
	quote, err := VerifyQuote(ak, b.Quote, b.Signature, b.pcrs)
	if err != nil {
		return nil, err
	}
	if quote.Bank != tpm2.AlgSHA256 {
		return nil, fmt.Errorf("%w: TPM quote is over the %v bank, the bundle says sha256", attest.ErrMalformed, quote.Bank)
	}
	if !bytes.Equal(quote.Attest.ExtraData, b.expectedQualifyingData()) {
		return nil, fmt.Errorf("%w: the quote's qualifying data does not bind the bundle's report data (%s mode)", attest.ErrReportData, b.QualifyingData)
	}
	// PCR 23 must be exactly one extend of the runtime measurement from zero.
	pcr23, ok := b.pcrs[RuntimePCR]
	if !ok {
		return nil, fmt.Errorf("%w: the quote does not cover the runtime PCR %d", attest.ErrMeasurement, RuntimePCR)
	}
	if want := extendFromZero(b.runtime); !bytes.Equal(pcr23, want) {
		return nil, fmt.Errorf("%w: PCR %d is %x, not the single extend of runtime measurement %x (%x)", attest.ErrMeasurement, RuntimePCR, pcr23, b.runtime, want)
	}
	c := baseClaims(Format, ak, quote, b.pcrs)
	c.Measurement = append([]byte(nil), b.runtime...)
	c.ReportData = append([]byte(nil), b.reportData...)
	c.Nonce = append([]byte(nil), quote.Attest.ExtraData...)
	c.Measurements["runtime"] = append([]byte(nil), b.runtime...)
	c.Extra["qualifying_data"] = b.QualifyingData
	log := b.EventLog
	if len(collateral) == 1 {
		log = collateral[0]
	}
	if len(log) > 0 {
		n, err := replayEventLog(log, bootPCRs(b.pcrs))
		if err != nil {
			return nil, err
		}
		c.Extra["event_log_events"] = n
	}
	if akCert != nil {
		c.Signer = akCert.Subject.String()
	}
	return c, nil
}

// bootPCRs are the quoted SHA-256 PCRs the firmware's event log describes:
// all but the runtime PCR, which Cloister extends itself.
func bootPCRs(values map[int][]byte) []gattest.PCR {
	var pcrs []gattest.PCR
	for i, v := range values {
		if i != RuntimePCR {
			pcrs = append(pcrs, gattest.PCR{Index: i, Digest: v, DigestAlg: crypto.SHA256})
		}
	}
	return pcrs
}

func baseClaims(format string, ak *AK, q *Quote, pcrs map[int][]byte) *attest.Claims {
	c := &attest.Claims{
		Class:             attest.ClassTPM,
		Format:            format,
		Measurements:      map[string][]byte{"pcr_digest": append([]byte(nil), q.Attest.AttestedQuoteInfo.PCRDigest...)},
		HardwareProtected: false,
		Advisories:        []string{},
		Warnings:          []string{NoMemoryProtectionWarning},
		Extra: map[string]any{
			"pcr_bank":         bankName(q.Bank),
			"pcrs":             q.Selection,
			"clock":            q.Attest.ClockInfo.Clock,
			"reset_count":      q.Attest.ClockInfo.ResetCount,
			"restart_count":    q.Attest.ClockInfo.RestartCount,
			"firmware_version": fmt.Sprintf("%#x", q.Attest.FirmwareVersion),
		},
	}
	for _, i := range q.Selection {
		c.Measurements["pcr"+strconv.Itoa(i)] = append([]byte(nil), pcrs[i]...)
	}
	if pemKey, err := ak.PublicKeyPEM(); err == nil {
		c.Signer = "TPM AK " + fingerprint(pemKey)
	}
	return c
}

func bankName(a tpm2.Algorithm) string {
	switch a {
	case tpm2.AlgSHA1:
		return "sha1"
	case tpm2.AlgSHA256:
		return "sha256"
	case tpm2.AlgSHA384:
		return "sha384"
	case tpm2.AlgSHA512:
		return "sha512"
	}
	return fmt.Sprintf("alg-%#x", uint16(a))
}

func quoteBank(quote []byte) (tpm2.Algorithm, error) {
	ad, err := tpm2.DecodeAttestationData(quote)
	if err != nil {
		return 0, fmt.Errorf("%w: TPMS_ATTEST: %v", attest.ErrMalformed, err)
	}
	if ad.AttestedQuoteInfo == nil {
		return 0, fmt.Errorf("%w: TPMS_ATTEST is not a quote", attest.ErrMalformed)
	}
	return ad.AttestedQuoteInfo.PCRSelection.Hash, nil
}

func x509VerifyOptions(opts attest.VerifyOptions) x509.VerifyOptions {
	return x509.VerifyOptions{CurrentTime: opts.Time()}
}

func fingerprint(b []byte) string {
	s := sha256Sum(b)
	return "sha256:" + hex.EncodeToString(s[:8])
}
