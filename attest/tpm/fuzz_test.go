package tpm

import (
	"context"
	"crypto"
	"encoding/json"
	"testing"

	gattest "github.com/google/go-attestation/attest"

	"github.com/cloisterhq/cloister/attest"
)

// FuzzVerify runs arbitrary bytes through the TPM verifier with the AKs of
// the GCP sample and of the recorded swtpm bundle pinned, so mutations of
// either real document get past the trust check and reach the quote, PCR
// and event-log code.
func FuzzVerify(f *testing.F) {
	data, akKey := loadGCP(f)
	f.Add(data)
	recorded, swAK := loadRecorded(f)
	f.Add(recorded)
	f.Add([]byte(`{"format":"cloister-tpm-evidence/v1","ak_public":"AAE=","quote":"/1RDRw==","signature":"AA==","pcr_bank":"sha256","pcrs":{"0":"00"},"report_data":"00","qualifying_data":"raw","runtime_measurement":"00"}`))
	opts := attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{akKey, swAK}}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Verifier{}.Verify(context.Background(), &attest.Evidence{Data: data}, opts)
		if err == nil && (c.Class != attest.ClassTPM || len(c.Measurement) == 0) {
			t.Fatalf("verified claims without a measurement: %+v", c)
		}
	})
}

func FuzzVerifyQuote(f *testing.F) {
	var g goAttestationJSON
	data, _ := loadGCP(f)
	if err := json.Unmarshal(data, &g); err != nil {
		f.Fatal(err)
	}
	f.Add(g.AK.Public, g.Quote.Quote, g.Quote.Signature)
	f.Fuzz(func(t *testing.T, akPub, quote, sig []byte) {
		ak, err := ParseAK(akPub)
		if err != nil {
			return
		}
		_, _ = VerifyQuote(ak, quote, sig, map[int][]byte{0: make([]byte, 20)})
	})
}

// FuzzEventLog: an event log is collateral a verifier receives from the
// attester's side; arbitrary bytes must never panic its parser or replay.
// Seeds: the GCP firmware log (SHA-1) and a crypto-agile log.
func FuzzEventLog(f *testing.F) {
	var g goAttestationJSON
	data, _ := loadGCP(f)
	if err := json.Unmarshal(data, &g); err != nil {
		f.Fatal(err)
	}
	f.Add(g.Log.Raw)
	f.Add(agileLog(4, []byte("firmware 1.0"), []byte("boot loader 2.1")))
	var sha1PCRs, sha256PCRs []gattest.PCR
	for _, p := range g.Log.PCRs {
		sha1PCRs = append(sha1PCRs, gattest.PCR{Index: p.Index, Digest: p.Digest, DigestAlg: p.DigestAlg})
	}
	sha256PCRs = append(sha256PCRs, gattest.PCR{Index: 4, Digest: replayed(crypto.SHA256, []byte("firmware 1.0"), []byte("boot loader 2.1")), DigestAlg: crypto.SHA256})
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, _ = replayEventLog(raw, sha1PCRs)
		_, _ = replayEventLog(raw, sha256PCRs)
	})
}
