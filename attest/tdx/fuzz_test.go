package tdx

import (
	"bytes"
	"context"
	"testing"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/dcap"
)

// FuzzPCSCollateral: one arbitrary item among the real PCS responses must
// never panic the collateral classifier or the conversion to DCAP form.
func FuzzPCSCollateral(f *testing.F) {
	items := pcsItems(f, "sample_tcbInfo_response")
	for _, it := range items {
		f.Add(it)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePCSCollateral(append([][]byte{b}, items[1:]...))
		if err == nil {
			_, _ = p.toDCAP()
		}
	})
}

// FuzzVerify runs arbitrary quote bytes through the TDX verifier, alone
// (package dcap) or with go-tdx-guest's PCS collateral (the path that
// hands the quote to go-tdx-guest's parser once dcap has checked its
// signatures). Only an unmodified signed quote may verify.
func FuzzVerify(f *testing.F) {
	items := pcsItems(f, "sample_tcbInfo_response")
	spr := read(f, "attestation/tdx/tdx_prod_quote_SPR_E4.dat")
	for _, q := range [][]byte{spr, read(f, "attestation/tdx/quote_v5_sample.dat"), read(f, "attestation/dcap/tdx_quote")} {
		f.Add(q, false)
		f.Add(q, true)
	}
	parsed, err := dcap.ParseQuote(spr)
	if err != nil {
		f.Fatal(err)
	}
	signed := parsed.SignedData
	f.Fuzz(func(t *testing.T, quote []byte, withPCS bool) {
		ev := &attest.Evidence{Class: attest.ClassTDX, Data: quote}
		if withPCS {
			ev.Collateral = items
		}
		c, err := Verifier{}.Verify(context.Background(), ev, attest.VerifyOptions{Now: at2023, AllowDebug: true})
		if err == nil && (c == nil || !bytes.HasPrefix(quote, signed)) {
			t.Fatalf("verified a quote whose signed part differs from the sample's")
		}
	})
}
