package tpm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strconv"

	"github.com/cloisterhq/cloister/attest"
)

// Format is the "format" member of Cloister's TPM evidence bundle.
const Format = "cloister-tpm-evidence/v1"

// RuntimePCR is the PCR the attester resets and extends with the runtime
// measurement. PCR 23 ("application support") is resettable from locality
// 0 on PC-client TPMs, so each attester starts it from zero and a verifier
// can replay it from a single event.
const RuntimePCR = 23

// Qualifying-data modes: how the 64-byte report data is bound.
const (
	// QualifyingRaw puts the report data itself in the quote: TPMs that
	// implement SHA-512 (swtpm does) accept 64 bytes of qualifying data.
	QualifyingRaw = "raw"
	// QualifyingSHA256 puts SHA-256(report data) in the quote, for TPMs
	// whose TPM2B_DATA holds at most 32 or 48 bytes.
	QualifyingSHA256 = "sha256"
)

const maxBundleSize = 1 << 20

// Bundle is Cloister's TPM evidence encoding (JSON; byte strings are
// base64, hashes hex):
//
//	{"format": "cloister-tpm-evidence/v1",
//	 "ak_public": TPMT_PUBLIC of the AK, "quote": TPMS_ATTEST,
//	 "signature": TPMT_SIGNATURE, "pcr_bank": "sha256",
//	 "pcrs": {"0": hex, ..., "23": hex},
//	 "report_data": 128 hex digits, "qualifying_data": "raw" | "sha256",
//	 "runtime_measurement": 64 hex digits (extended into PCR 23 after reset),
//	 "event_log": optional TCG event log, "ak_certificate": optional DER}
type Bundle struct {
	Format             string            `json:"format"`
	AKPublic           []byte            `json:"ak_public"`
	Quote              []byte            `json:"quote"`
	Signature          []byte            `json:"signature"`
	PCRBank            string            `json:"pcr_bank"`
	PCRs               map[string]string `json:"pcrs"`
	ReportData         string            `json:"report_data"`
	QualifyingData     string            `json:"qualifying_data"`
	RuntimeMeasurement string            `json:"runtime_measurement"`
	EventLog           []byte            `json:"event_log,omitempty"`
	AKCertificate      []byte            `json:"ak_certificate,omitempty"`
}

// parsedBundle is a Bundle with its values decoded.
type parsedBundle struct {
	Bundle
	pcrs       map[int][]byte
	reportData []byte
	runtime    []byte
}

func parseBundle(data []byte) (*parsedBundle, error) {
	if len(data) > maxBundleSize {
		return nil, fmt.Errorf("%w: TPM bundle is %d bytes, limit %d", attest.ErrMalformed, len(data), maxBundleSize)
	}
	var b parsedBundle
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b.Bundle); err != nil {
		return nil, fmt.Errorf("%w: TPM bundle: %v", attest.ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: TPM bundle: trailing data", attest.ErrMalformed)
	}
	if b.Format != Format {
		return nil, fmt.Errorf("%w: TPM bundle format %q, want %q", attest.ErrMalformed, b.Format, Format)
	}
	if b.PCRBank != "sha256" {
		return nil, fmt.Errorf("%w: TPM bundle PCR bank %q, want sha256", attest.ErrMalformed, b.PCRBank)
	}
	if b.QualifyingData != QualifyingRaw && b.QualifyingData != QualifyingSHA256 {
		return nil, fmt.Errorf("%w: TPM bundle qualifying_data %q, want %q or %q", attest.ErrMalformed, b.QualifyingData, QualifyingRaw, QualifyingSHA256)
	}
	var err error
	if b.reportData, err = hexExact(b.ReportData, attest.ReportDataSize); err != nil {
		return nil, fmt.Errorf("%w: TPM bundle report_data: %v", attest.ErrMalformed, err)
	}
	if b.runtime, err = hexExact(b.RuntimeMeasurement, sha256.Size); err != nil {
		return nil, fmt.Errorf("%w: TPM bundle runtime_measurement: %v", attest.ErrMalformed, err)
	}
	if len(b.PCRs) == 0 || len(b.PCRs) > 24 {
		return nil, fmt.Errorf("%w: TPM bundle has %d PCR values (1..24)", attest.ErrMalformed, len(b.PCRs))
	}
	b.pcrs = make(map[int][]byte, len(b.PCRs))
	for k, v := range b.PCRs {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i > 23 || strconv.Itoa(i) != k {
			return nil, fmt.Errorf("%w: TPM bundle PCR index %q", attest.ErrMalformed, k)
		}
		if b.pcrs[i], err = hexExact(v, sha256.Size); err != nil {
			return nil, fmt.Errorf("%w: TPM bundle PCR %d: %v", attest.ErrMalformed, i, err)
		}
	}
	return &b, nil
}

// expectedQualifyingData is what the quote's extraData must be.
func (b *parsedBundle) expectedQualifyingData() []byte {
	if b.QualifyingData == QualifyingSHA256 {
		s := sha256.Sum256(b.reportData)
		return s[:]
	}
	return b.reportData
}

func hexExact(s string, n int) ([]byte, error) {
	if len(s) != 2*n {
		return nil, fmt.Errorf("%d hex digits, want %d", len(s), 2*n)
	}
	return hex.DecodeString(s)
}

func pemEncode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
