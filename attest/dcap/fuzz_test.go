package dcap

import (
	"testing"

	"github.com/cloisterhq/cloister/attest"
)

// FuzzParseQuote: arbitrary bytes never panic the quote parser, and
// whatever parses also survives signature verification without panicking.
func FuzzParseQuote(f *testing.F) {
	for _, name := range []string{"dcap/sgx_quote", "dcap/tdx_quote", "dcap/tdx_quote_outdated", "tdx/quote_v5_sample.dat"} {
		f.Add(read(f, "attestation/"+name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		Sniff(b)
		if _, err := ParseQuote(b); err != nil {
			return
		}
		_, _ = Verify(b, nil, attest.VerifyOptions{Now: inWindow2025})
	})
}

// FuzzCollateralJSON covers the collateral envelope and, through it, the
// TCB info and QE identity parsers.
func FuzzCollateralJSON(f *testing.F) {
	f.Add(read(f, "attestation/dcap/sgx_quote_collateral.json"))
	f.Add(read(f, "attestation/dcap/tdx_quote_outdated_collateral.json"))
	f.Add([]byte(`{"tcb_info":"{}"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		IsCollateralJSON(b)
		_, _ = ParseCollateralJSON(b)
	})
}

// FuzzTCBInfo exercises the TCB info and QE identity bodies directly.
func FuzzTCBInfo(f *testing.F) {
	col, err := ParseCollateralJSON(read(f, "attestation/dcap/tdx_quote_collateral.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(col.TCBInfoRaw)
	f.Add(col.QEIdentityRaw)
	f.Add(read(f, "attestation/tdx/sample_tcbinfo_response_v5"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseTCBInfo(b)
		_, _ = ParseQEIdentity(b)
	})
}
