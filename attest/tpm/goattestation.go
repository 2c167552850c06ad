package tpm

import (
	"crypto"
	"encoding/json"
	"fmt"

	gattest "github.com/google/go-attestation/attest"

	"github.com/cloisterhq/cloister/attest"
)

// GoAttestationFormat is Claims.Format for evidence in go-attestation's
// JSON test-data shape.
const GoAttestationFormat = "go-attestation-json"

// goAttestationJSON is the shape of go-attestation's recorded test data
// (e.g. a GCP Shielded VM): the AK public area, one quote with its nonce,
// the PCR values and the raw TCG event log. The AK's creation data is
// present but not used: it is certified only by the AK itself.
type goAttestationJSON struct {
	Static struct {
		TPMVersion int
	}
	AK struct {
		Public []byte
	}
	Quote struct {
		Nonce     []byte
		Alg       int
		Quote     []byte
		Signature []byte
	}
	Log struct {
		PCRs []struct {
			Index     int
			Digest    []byte
			DigestAlg crypto.Hash
		}
		PCRAlg int
		Raw    []byte
	}
}

func verifyGoAttestation(data []byte, opts attest.VerifyOptions, collateral [][]byte) (*attest.Claims, error) {
	if len(data) > maxBundleSize {
		return nil, fmt.Errorf("%w: TPM JSON is %d bytes, limit %d", attest.ErrMalformed, len(data), maxBundleSize)
	}
	var g goAttestationJSON
	if err := json.Unmarshal(data, &g); err != nil {
		return nil, fmt.Errorf("%w: TPM JSON (go-attestation shape): %v", attest.ErrMalformed, err)
	}
	if g.Static.TPMVersion != 2 {
		return nil, fmt.Errorf("%w: TPM version %d, only TPM 2.0 quotes are supported", attest.ErrMalformed, g.Static.TPMVersion)
	}
	ak, err := ParseAK(g.AK.Public)
	if err != nil {
		return nil, err
	}
	if err := ak.Trusted(opts.TrustedKeys, nil, nil, x509VerifyOptions(opts)); err != nil {
		return nil, err
	}
	// The quote covers one bank; pick the PCR values of that bank. Values
	// of other banks are not signed and are not used at all: the event log
	// is replayed against the quoted values only (go-attestation's replay
	// accepts a PCR if any one bank given for it matches, so an unsigned
	// bank would let a forged log through).
	q, err := quoteBank(g.Quote.Quote)
	if err != nil {
		return nil, err
	}
	bankHash, err := q.Hash()
	if err != nil {
		return nil, fmt.Errorf("%w: TPM quote bank: %v", attest.ErrMalformed, err)
	}
	pcrs := map[int][]byte{}
	for _, p := range g.Log.PCRs {
		if p.DigestAlg == bankHash {
			if _, dup := pcrs[p.Index]; dup {
				return nil, fmt.Errorf("%w: PCR %d given twice", attest.ErrMalformed, p.Index)
			}
			pcrs[p.Index] = p.Digest
		}
	}
	quote, err := VerifyQuote(ak, g.Quote.Quote, g.Quote.Signature, pcrs)
	if err != nil {
		return nil, err
	}
	if string(quote.Attest.ExtraData) != string(g.Quote.Nonce) {
		return nil, fmt.Errorf("%w: quote qualifying data %x differs from the stated nonce %x", attest.ErrNonce, []byte(quote.Attest.ExtraData), g.Quote.Nonce)
	}
	c := baseClaims(GoAttestationFormat, ak, quote, pcrs)
	c.Measurement = append([]byte(nil), quote.Attest.AttestedQuoteInfo.PCRDigest...)
	c.ReportData = append([]byte(nil), quote.Attest.ExtraData...)
	c.Nonce = append([]byte(nil), quote.Attest.ExtraData...)
	log := g.Log.Raw
	for _, cl := range collateral {
		log = cl // an event log given as collateral replaces the embedded one
	}
	if len(log) > 0 {
		quoted := make([]gattest.PCR, 0, len(pcrs))
		for i, v := range pcrs {
			quoted = append(quoted, gattest.PCR{Index: i, Digest: v, DigestAlg: bankHash})
		}
		n, err := replayEventLog(log, quoted)
		if err != nil {
			return nil, err
		}
		c.Extra["event_log_events"] = n
	} else {
		c.Warnings = append(c.Warnings, "no event log: the PCR values are signed but what was measured into them is unknown")
	}
	return c, nil
}

// replayEventLog parses a TCG event log and checks it replays to pcrs
// (every bank given). It returns the number of events.
func replayEventLog(raw []byte, pcrs []gattest.PCR) (int, error) {
	el, err := gattest.ParseEventLog(raw)
	if err != nil {
		return 0, fmt.Errorf("%w: TPM event log: %v", attest.ErrMalformed, err)
	}
	events, err := el.Verify(pcrs)
	if err != nil {
		return 0, fmt.Errorf("%w: the TPM event log does not replay to the quoted PCR values: %v", attest.ErrMeasurement, err)
	}
	return len(events), nil
}
