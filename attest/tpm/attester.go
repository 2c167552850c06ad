package tpm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/software"
)

// QuotedPCRs are the SHA-256 PCRs every quote covers: the firmware and
// boot chain (0-7) and the runtime PCR.
var QuotedPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, RuntimePCR}

// Attester quotes with an ECC attestation key of the TPM it was given.
type Attester struct {
	mu         sync.Mutex
	rw         io.ReadWriter
	ak         tpmutil.Handle
	open       bool
	akPublic   []byte
	runtime    [32]byte
	measured   bool
	eventLog   []byte
	akCert     []byte
	qualifying string
}

// Option adjusts an Attester.
type Option func(*Attester)

// WithMeasurement sets the runtime measurement instead of hashing the
// running executable.
func WithMeasurement(m [32]byte) Option {
	return func(a *Attester) { a.runtime, a.measured = m, true }
}

// WithEventLog attaches a TCG event log (e.g. from
// /sys/kernel/security/tpm0/binary_bios_measurements) to every bundle.
func WithEventLog(log []byte) Option {
	return func(a *Attester) { a.eventLog = append([]byte(nil), log...) }
}

// WithAKCertificate attaches a DER AK certificate to every bundle, for
// verifiers that trust AKs by certificate instead of pinning.
func WithAKCertificate(der []byte) Option {
	return func(a *Attester) { a.akCert = append([]byte(nil), der...) }
}

// NewAttester creates (or re-creates: the template is deterministic, so
// the same TPM yields the same key) the ECC P-256 attestation key under
// the endorsement hierarchy, resets PCR 23 and extends the runtime
// measurement into it. Cloister assumes it owns PCR 23 on this TPM.
func NewAttester(rw io.ReadWriter, opts ...Option) (*Attester, error) {
	a := &Attester{rw: rw}
	for _, o := range opts {
		o(a)
	}
	if !a.measured {
		m, err := software.RuntimeMeasurement()
		if err != nil {
			return nil, err
		}
		a.runtime = m
	}
	h, _, err := tpm2.CreatePrimary(rw, tpm2.HandleEndorsement, tpm2.PCRSelection{}, "", "", AKTemplateECC())
	if err != nil {
		return nil, fmt.Errorf("tpm attester: creating the attestation key: %w", err)
	}
	a.ak, a.open = h, true
	pub, _, _, err := tpm2.ReadPublic(rw, h)
	if err == nil {
		a.akPublic, err = pub.Encode()
	}
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("tpm attester: reading the AK public area: %w", err)
	}
	if _, err := ParseAK(a.akPublic); err != nil {
		a.Close()
		return nil, fmt.Errorf("tpm attester: the TPM made an unusable AK: %w", err)
	}
	if err := a.measureRuntime(); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// AKTemplateECC is the attestation key template: an ECC P-256 restricted
// signing key (ECDSA, SHA-256) created in the endorsement hierarchy. It is
// the same template as go-tpm-tools' AttestationKeyECC, so the same TPM
// always derives the same AK and a pinned AK survives restarts.
func AKTemplateECC() tpm2.Public {
	return tpm2.Public{
		Type:       tpm2.AlgECC,
		NameAlg:    tpm2.AlgSHA256,
		Attributes: tpm2.FlagSignerDefault,
		ECCParameters: &tpm2.ECCParams{
			Sign:    &tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256},
			CurveID: tpm2.CurveNISTP256,
			Point:   tpm2.ECPoint{XRaw: make([]byte, 32), YRaw: make([]byte, 32)},
		},
	}
}

func (a *Attester) measureRuntime() error {
	if err := tpm2.PCRReset(a.rw, tpmutil.Handle(RuntimePCR)); err != nil {
		return fmt.Errorf("tpm attester: resetting PCR %d: %w", RuntimePCR, err)
	}
	if err := tpm2.PCRExtend(a.rw, tpmutil.Handle(RuntimePCR), tpm2.AlgSHA256, a.runtime[:], ""); err != nil {
		return fmt.Errorf("tpm attester: extending PCR %d: %w", RuntimePCR, err)
	}
	return nil
}

// Close flushes the attestation key from the TPM. It does not close the
// TPM connection.
func (a *Attester) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.open {
		_ = tpm2.FlushContext(a.rw, a.ak)
		a.open = false
	}
}

// Class returns attest.ClassTPM.
func (a *Attester) Class() attest.Class { return attest.ClassTPM }

// AK returns the parsed attestation key.
func (a *Attester) AK() (*AK, error) { return ParseAK(a.akPublic) }

// PublicKeyPEM returns the AK as a PEM "PUBLIC KEY" for pinning.
func (a *Attester) PublicKeyPEM() ([]byte, error) {
	ak, err := a.AK()
	if err != nil {
		return nil, err
	}
	return ak.PublicKeyPEM()
}

// Attest quotes PCRs 0-7 and 23 (SHA-256 bank) with reportData as the
// qualifying data, or SHA-256(reportData) on TPMs that refuse 64 bytes, and
// returns a Cloister TPM bundle.
func (a *Attester) Attest(ctx context.Context, reportData [attest.ReportDataSize]byte) (*attest.Evidence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.open {
		return nil, errors.New("tpm attester: closed")
	}
	sel := tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: QuotedPCRs}
	mode := QualifyingRaw
	if a.qualifying == QualifyingSHA256 {
		mode = QualifyingSHA256
	}
	extra := reportData[:]
	if mode == QualifyingSHA256 {
		s := sha256.Sum256(reportData[:])
		extra = s[:]
	}
	quote, sig, err := tpm2.QuoteRaw(a.rw, a.ak, "", "", extra, sel, tpm2.AlgNull)
	if err != nil && mode == QualifyingRaw && isSizeError(err) {
		// TPMs without SHA-512 cap TPM2B_DATA below 64 bytes.
		mode, a.qualifying = QualifyingSHA256, QualifyingSHA256
		s := sha256.Sum256(reportData[:])
		extra = s[:]
		quote, sig, err = tpm2.QuoteRaw(a.rw, a.ak, "", "", extra, sel, tpm2.AlgNull)
	}
	if err != nil {
		return nil, fmt.Errorf("tpm attester: quote: %w", err)
	}
	values := make(map[int][]byte, len(QuotedPCRs))
	pcrs := make(map[string]string, len(QuotedPCRs))
	for _, i := range QuotedPCRs {
		v, err := tpm2.ReadPCR(a.rw, i, tpm2.AlgSHA256)
		if err != nil {
			return nil, fmt.Errorf("tpm attester: reading PCR %d: %w", i, err)
		}
		values[i] = v
		pcrs[strconv.Itoa(i)] = hex.EncodeToString(v)
	}
	// Check our own quote: a PCR extended between the quote and the reads
	// would make evidence that never verifies.
	ak, err := ParseAK(a.akPublic)
	if err != nil {
		return nil, err
	}
	if _, err := VerifyQuote(ak, quote, sig, values); err != nil {
		return nil, fmt.Errorf("tpm attester: the PCRs changed while quoting, try again: %w", err)
	}
	if want := hex.EncodeToString(extendFromZero(a.runtime[:])); pcrs[strconv.Itoa(RuntimePCR)] != want {
		return nil, fmt.Errorf("tpm attester: PCR %d was changed by someone else since the runtime was measured; restart the attester", RuntimePCR)
	}
	if len(a.eventLog) > 0 {
		// A log that does not replay would make every verification fail:
		// refuse it here, where the cause is known.
		if _, err := replayEventLog(a.eventLog, bootPCRs(values)); err != nil {
			return nil, fmt.Errorf("tpm attester: the event log does not describe this TPM's PCRs: %w", err)
		}
	}
	b := Bundle{
		Format:             Format,
		AKPublic:           a.akPublic,
		Quote:              quote,
		Signature:          sig,
		PCRBank:            "sha256",
		PCRs:               pcrs,
		ReportData:         hex.EncodeToString(reportData[:]),
		QualifyingData:     mode,
		RuntimeMeasurement: hex.EncodeToString(a.runtime[:]),
		EventLog:           a.eventLog,
		AKCertificate:      a.akCert,
	}
	data, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("tpm attester: encoding bundle: %w", err)
	}
	return &attest.Evidence{Class: attest.ClassTPM, Data: data}, nil
}

// DefaultEventLogPath is where Linux exposes the firmware's TCG event log.
const DefaultEventLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"

// isSizeError recognises the TPM's answer to qualifying data longer than
// its TPM2B_DATA (TPM_RC_SIZE, or a parameter error on the extra data).
func isSizeError(err error) bool {
	var pe tpm2.ParameterError
	if errors.As(err, &pe) && (pe.Code == tpm2.RCSize || pe.Code == tpm2.RCValue) {
		return true
	}
	var ve tpm2.Error
	return errors.As(err, &ve) && ve.Code == tpm2.RCSize
}
