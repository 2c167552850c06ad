package attesthw

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/attest"
)

// TestDetectThenVerify runs each hardware conformance file through the
// steps `cloister attest verify --class auto` takes — DecodeInput, Detect,
// then the registered verifier — and checks the documented outcome, so
// the CLI gives it once these classes are registered with it.
func TestDetectThenVerify(t *testing.T) {
	for _, tc := range []struct {
		file       string
		collateral []string
		class      attest.Class
		opts       attest.VerifyOptions
		want       error
		status     string
	}{
		{"sev-snp/attestation.bin", []string{"sev-snp/vcek.testcer", "sev-snp/ask_ark_milan.pem"}, attest.ClassSEVSNP, attest.VerifyOptions{Now: at2024, AllowDebug: true}, nil, ""},
		{"sev-snp/attestation.bin", []string{"sev-snp/vcek.testcer", "sev-snp/ask_ark_milan.pem"}, attest.ClassSEVSNP, attest.VerifyOptions{Now: at2024}, attest.ErrDebug, ""},
		{"dcap/sgx_quote", []string{"dcap/sgx_quote_collateral.json"}, attest.ClassSGX, attest.VerifyOptions{Now: at2025}, nil, "ConfigurationAndSWHardeningNeeded"},
		{"dcap/tdx_quote", []string{"dcap/tdx_quote_collateral.json"}, attest.ClassTDX, attest.VerifyOptions{Now: at2025}, nil, "UpToDate"},
		{"dcap/tdx_quote_outdated", []string{"dcap/tdx_quote_outdated_collateral.json"}, attest.ClassTDX, attest.VerifyOptions{Now: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}, attest.ErrTCB, ""},
		{"tdx/tdx_prod_quote_SPR_E4.dat", nil, attest.ClassTDX, attest.VerifyOptions{Now: at2023}, nil, ""},
		{"tdx/quote_v5_sample.dat", nil, attest.ClassTDX, attest.VerifyOptions{Now: time.Date(2026, 2, 15, 0, 0, 0, 0, time.UTC)}, nil, ""},
		{"ra-tls/gramine-cert.pem", nil, attest.ClassRATLS, attest.VerifyOptions{}, attest.ErrDebug, ""},
		{"ra-tls/intel-sgxsdk-cert.pem", nil, attest.ClassRATLS, attest.VerifyOptions{AllowDebug: true}, nil, ""},
		{"ra-tls/rats-tls-cert.pem", nil, attest.ClassRATLS, attest.VerifyOptions{AllowDebug: true}, attest.ErrExpired, ""},
	} {
		data, err := attest.DecodeInput(read(t, tc.file))
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		class, err := attest.Detect(data)
		if err != nil || class != tc.class {
			t.Errorf("%s: detected %q (%v), want %q", tc.file, class, err, tc.class)
			continue
		}
		ev := &attest.Evidence{Class: class, Data: data}
		for _, c := range tc.collateral {
			ev.Collateral = append(ev.Collateral, read(t, c))
		}
		claims, err := attest.Verify(context.Background(), ev, tc.opts)
		if tc.want != nil {
			if !errors.Is(err, tc.want) {
				t.Errorf("%s: err = %v, want %v", tc.file, err, tc.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.file, err)
			continue
		}
		if claims.TCBStatus != tc.status {
			t.Errorf("%s: status %q, want %q", tc.file, claims.TCBStatus, tc.status)
		}
	}
}
