package tdx

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/dcap"
	"github.com/cloisterhq/cloister/internal/corpus"
)

func read(t testing.TB, rel string) []byte {
	return corpus.Read(t, rel)
}

// pcsItems is the go-tdx-guest test collateral, as the CLI would pass it
// with repeated --collateral flags.
func pcsItems(t testing.TB, tcb string) [][]byte {
	var out [][]byte
	for _, f := range []string{tcb, "sample_qeIdentity_response", "pckcrl", "rootcrl.der", "tcbInfoIssuerChain.pem", "pckCrlIssuerChain.pem", "qeIdentityIssuerChain.pem", "trusted_root.pem"} {
		out = append(out, read(t, "attestation/tdx/"+f))
	}
	return out
}

var at2023 = time.Date(2023, 7, 1, 0, 0, 0, 0, time.UTC)

func verifyAt(ev *attest.Evidence, at time.Time) (*attest.Claims, error) {
	return attest.Verify(context.Background(), ev, attest.VerifyOptions{Now: at})
}

// TestConformanceSPRQuote: the production Sapphire Rapids v4 quote's
// signature and PCK chain verify against trusted_root.pem (which is the
// built-in Intel root, pinned here explicitly) at 2023-07-01 and today.
func TestConformanceSPRQuote(t *testing.T) {
	q := read(t, "attestation/tdx/tdx_prod_quote_SPR_E4.dat")
	root := read(t, "attestation/tdx/trusted_root.pem")
	anchors, err := attest.ParseTrustAnchors("trusted_root.pem", root)
	if err != nil {
		t.Fatal(err)
	}
	roots := anchors.Roots
	// 2026-11-30 rather than the clock: the PCK chain expires in 2029.
	for _, at := range []time.Time{at2023, time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)} {
		c, err := attest.Verify(context.Background(), &attest.Evidence{Class: attest.ClassTDX, Data: q}, attest.VerifyOptions{Now: at, Roots: roots, ReplaceRoots: true})
		if err != nil {
			t.Fatalf("at %s: %v", at, err)
		}
		parsed, _ := dcap.ParseQuote(q)
		if c.Format != "tdx-quote-v4" || c.Debug || !bytes.Equal(c.Measurement, parsed.TD.MRTD[:]) || !bytes.Equal(c.ReportData, parsed.TD.ReportData[:]) {
			t.Errorf("format %s debug %v", c.Format, c.Debug)
		}
		if c.TCBStatus != "" || len(c.Warnings) != 2 || !strings.Contains(c.Warnings[0], "39 bytes after the quote") || !strings.Contains(c.Warnings[1], "no DCAP collateral") {
			t.Errorf("status %q warnings %q", c.TCBStatus, c.Warnings)
		}
		if c.Extra["fmspc"] != "50806f000000" {
			t.Errorf("fmspc %v", c.Extra["fmspc"])
		}
	}
	// Pretending to be in 2053: the PCK chain has expired.
	if _, err := verifyAt(&attest.Evidence{Class: attest.ClassTDX, Data: q}, time.Date(2053, 1, 1, 0, 0, 0, 0, time.UTC)); !errors.Is(err, attest.ErrExpired) {
		t.Errorf("2053: %v", err)
	}
}

// TestConformanceSampleTCBInfo: with go-tdx-guest's sample PCS responses
// the TCB level match fails, as upstream expects; today the TCB info (and
// its signing certificate, expired 2025-05-21) is out of date.
func TestConformanceSampleTCBInfo(t *testing.T) {
	q := read(t, "attestation/tdx/tdx_prod_quote_SPR_E4.dat")
	ev := &attest.Evidence{Class: attest.ClassTDX, Data: q, Collateral: pcsItems(t, "sample_tcbInfo_response")}
	_, err := verifyAt(ev, at2023)
	if !errors.Is(err, attest.ErrTCB) || !strings.Contains(err.Error(), "no matching TCB level found") {
		t.Errorf("2023: err = %v, want ErrTCB no matching TCB level found", err)
	}
	if _, err := verifyAt(ev, time.Now()); !errors.Is(err, attest.ErrExpired) {
		t.Errorf("today: err = %v, want ErrExpired", err)
	}
	// A tampered TCB info response fails on its signature before the level match.
	tampered := append([][]byte{bytes.Replace(ev.Collateral[0], []byte(`"tcbEvaluationDataNumber":15`), []byte(`"tcbEvaluationDataNumber":16`), 1)}, ev.Collateral[1:]...)
	if bytes.Equal(tampered[0], ev.Collateral[0]) {
		t.Fatal("tamper did not change the TCB info")
	}
	if _, err := verifyAt(&attest.Evidence{Class: attest.ClassTDX, Data: q, Collateral: tampered}, at2023); !errors.Is(err, attest.ErrSignature) {
		t.Errorf("tampered TCB info: err = %v, want ErrSignature", err)
	}
	// Half the collateral is refused rather than silently ignored.
	if _, err := verifyAt(&attest.Evidence{Class: attest.ClassTDX, Data: q, Collateral: ev.Collateral[:1]}, at2023); !errors.Is(err, attest.ErrMalformed) {
		t.Errorf("TCB info alone: err = %v, want ErrMalformed", err)
	}
}

// TestConformanceV5Sample documents quote_v5_sample.dat: a TDX 1.5 quote
// whose PCK certificate is valid from 2026-01-27. Without collateral it
// verifies from then on; with the v5 TCB info (2026-02-01..2026-03-03)
// the rest of the sample collateral (QE identity and CRLs from 2023) is
// out of its window, so verification fails with ErrExpired.
func TestConformanceV5Sample(t *testing.T) {
	q := read(t, "attestation/tdx/quote_v5_sample.dat")
	at := time.Date(2026, 2, 15, 0, 0, 0, 0, time.UTC)
	c, err := verifyAt(&attest.Evidence{Class: attest.ClassTDX, Data: q}, at)
	if err != nil {
		t.Fatal(err)
	}
	if c.Format != "tdx-quote-v5" || c.Debug || c.TCBStatus != "" {
		t.Errorf("format %s debug %v status %q", c.Format, c.Debug, c.TCBStatus)
	}
	if _, err := verifyAt(&attest.Evidence{Class: attest.ClassTDX, Data: q}, at2023); !errors.Is(err, attest.ErrExpired) {
		t.Errorf("2023: %v", err)
	}
	if _, err := verifyAt(&attest.Evidence{Class: attest.ClassTDX, Data: q, Collateral: pcsItems(t, "sample_tcbinfo_response_v5")}, at); !errors.Is(err, attest.ErrExpired) {
		t.Errorf("with v5 TCB info: %v", err)
	}
}

func TestConformanceDCAPCollateral(t *testing.T) {
	ev := &attest.Evidence{Class: attest.ClassTDX, Data: read(t, "attestation/dcap/tdx_quote"), Collateral: [][]byte{read(t, "attestation/dcap/tdx_quote_collateral.json")}}
	c, err := verifyAt(ev, time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if c.TCBStatus != "UpToDate" || len(c.Advisories) != 0 {
		t.Errorf("status %q advisories %v", c.TCBStatus, c.Advisories)
	}
	if _, err := verifyAt(ev, time.Date(2025, 7, 20, 0, 0, 0, 0, time.UTC)); !errors.Is(err, attest.ErrExpired) {
		t.Errorf("after window: %v", err)
	}
}

func TestTamperedSPRQuote(t *testing.T) {
	q := read(t, "attestation/tdx/tdx_prod_quote_SPR_E4.dat")
	for name, off := range map[string]int{"mrtd": 48 + 136, "report data": 48 + 520, "quote signature": 48 + 584 + 4 + 10, "QE report": 48 + 584 + 4 + 128 + 6 + 20} {
		b := bytes.Clone(q)
		b[off] ^= 1
		if _, err := verifyAt(&attest.Evidence{Class: attest.ClassTDX, Data: b}, at2023); !errors.Is(err, attest.ErrSignature) {
			t.Errorf("%s: err = %v, want ErrSignature", name, err)
		}
	}
	// A flipped byte in the PCK leaf certificate's signature.
	if _, err := verifyAt(&attest.Evidence{Class: attest.ClassTDX, Data: corpus.TamperPCK(t, q)}, at2023); !errors.Is(err, attest.ErrChain) {
		t.Errorf("PCK certificate: err = %v, want ErrChain", err)
	}
	// The same tampering with the PCS collateral: go-tdx-guest is never
	// reached, package dcap refuses first.
	if _, err := verifyAt(&attest.Evidence{Class: attest.ClassTDX, Data: corpus.TamperPCK(t, q), Collateral: pcsItems(t, "sample_tcbInfo_response")}, at2023); !errors.Is(err, attest.ErrChain) {
		t.Errorf("PCK certificate with PCS collateral: err = %v, want ErrChain", err)
	}
	if _, err := verifyAt(&attest.Evidence{Class: attest.ClassTDX, Data: read(t, "attestation/dcap/sgx_quote")}, time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)); !errors.Is(err, attest.ErrMalformed) {
		t.Errorf("SGX quote as TDX: %v", err)
	}
}

func TestSniff(t *testing.T) {
	if !Sniff(read(t, "attestation/tdx/tdx_prod_quote_SPR_E4.dat")) || !Sniff(read(t, "attestation/tdx/quote_v5_sample.dat")) || Sniff(read(t, "attestation/dcap/sgx_quote")) {
		t.Error("Sniff")
	}
}

// TestPCSCollateralThroughDCAP converts go-tdx-guest's sample PCS
// responses into DCAP collateral and verifies the v4 quote with package
// dcap: both implementations must reach the same verdict.
func TestPCSCollateralThroughDCAP(t *testing.T) {
	p, err := parsePCSCollateral(pcsItems(t, "sample_tcbInfo_response"))
	if err != nil {
		t.Fatal(err)
	}
	col, err := p.toDCAP()
	if err != nil {
		t.Fatal(err)
	}
	if col.TCBInfo.FMSPC != "50806f000000" || col.QEIdentity.ID != "TD_QE" {
		t.Errorf("converted collateral: fmspc %s QE %s", col.TCBInfo.FMSPC, col.QEIdentity.ID)
	}
	q := read(t, "attestation/tdx/tdx_prod_quote_SPR_E4.dat")
	_, err = dcap.Verify(q, col, attest.VerifyOptions{Now: at2023})
	if !errors.Is(err, attest.ErrTCB) || !strings.Contains(err.Error(), "no matching TCB level found") {
		t.Fatalf("dcap on PCS collateral: err = %v, want ErrTCB no matching TCB level found", err)
	}
}

// TestTamperedV5Sample: the v5 sample verifies without collateral from
// 2026-01-27 (TestConformanceV5Sample); flipped bytes in its body (TD 1.5,
// after the 6-byte body descriptor), its signature and its PCK certificate
// must each fail, and so must a time after the PCK chain expires.
func TestTamperedV5Sample(t *testing.T) {
	q := read(t, "attestation/tdx/quote_v5_sample.dat")
	at := time.Date(2026, 2, 15, 0, 0, 0, 0, time.UTC)
	parsed, err := dcap.ParseQuote(q)
	if err != nil {
		t.Fatal(err)
	}
	sigOff := len(parsed.SignedData) + 4
	for name, off := range map[string]int{"body descriptor": 48, "mrtd": 48 + 6 + 136, "report data": 48 + 6 + 520, "mrservicetd": len(parsed.SignedData) - 1, "quote signature": sigOff + 10} {
		b := bytes.Clone(q)
		b[off] ^= 1
		if _, err := verifyAt(&attest.Evidence{Class: attest.ClassTDX, Data: b}, at); !errors.Is(err, attest.ErrSignature) && !errors.Is(err, attest.ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrSignature", name, err)
		} else if name != "body descriptor" && !errors.Is(err, attest.ErrSignature) {
			t.Errorf("%s: err = %v, want ErrSignature", name, err)
		}
	}
	if _, err := verifyAt(&attest.Evidence{Class: attest.ClassTDX, Data: corpus.TamperPCK(t, q)}, at); !errors.Is(err, attest.ErrChain) {
		t.Errorf("PCK certificate: err = %v, want ErrChain", err)
	}
	if _, err := verifyAt(&attest.Evidence{Class: attest.ClassTDX, Data: q}, time.Date(2053, 1, 1, 0, 0, 0, 0, time.UTC)); !errors.Is(err, attest.ErrExpired) {
		t.Errorf("2053: err = %v, want ErrExpired", err)
	}
}
