package tpm

import (
	"context"
	"crypto"
	"encoding/json"
	"testing"

	"github.com/cloisterhq/cloister/attest"
)

func FuzzVerify(f *testing.F) {
	data, akKey := loadGCP(f)
	f.Add(data)
	f.Add([]byte(`{"format":"cloister-tpm-evidence/v1","ak_public":"AAE=","quote":"/1RDRw==","signature":"AA==","pcr_bank":"sha256","pcrs":{"0":"00"},"report_data":"00","qualifying_data":"raw","runtime_measurement":"00"}`))
	opts := attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{akKey}}
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
