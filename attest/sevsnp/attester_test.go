package sevsnp

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	test "github.com/google/go-sev-guest/testing"

	"github.com/cloisterhq/cloister/attest"
)

// TestAttesterWithFakeSecureProcessor runs the attester against
// go-sev-guest's fake AMD-SP, which signs reports with a test-only
// ARK→ASK→VCEK chain, and verifies the result with that ARK pinned.
func TestAttesterWithFakeSecureProcessor(t *testing.T) {
	var rd [64]byte
	copy(rd[:], "cloister sev-snp attester test")
	now := time.Now()
	report := test.CreateRawReport(&test.TestReportOptions{ReportData: rd[:]})
	qp, err := test.TcQuoteProvider([]test.TestCase{{Name: "rd", Input: rd, Output: report}}, &test.DeviceOptions{Now: now, Product: abi.DefaultSevProduct()})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := (&Attester{Provider: qp}).Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Class != attest.ClassSEVSNP || len(ev.Data) != ReportSize || len(ev.Collateral) < 3 {
		t.Fatalf("evidence: class %s, %d bytes, %d collateral items", ev.Class, len(ev.Data), len(ev.Collateral))
	}
	opts := attest.VerifyOptions{Now: now, ReplaceRoots: true, Roots: []*x509.Certificate{qp.Device.Signer.Ark}, AllowDebug: true}
	c, err := attest.Verify(context.Background(), ev, opts)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !bytes.Equal(c.ReportData, rd[:]) || !c.Debug {
		t.Errorf("report data %x debug %v", c.ReportData, c.Debug)
	}
	// The fake report's policy allows debugging: refused by default.
	opts.AllowDebug = false
	if _, err := attest.Verify(context.Background(), ev, opts); !errors.Is(err, attest.ErrDebug) {
		t.Errorf("err = %v, want ErrDebug", err)
	}
	// The built-in AMD roots do not vouch for the fake chain.
	if _, err := attest.Verify(context.Background(), ev, attest.VerifyOptions{Now: now, AllowDebug: true}); !errors.Is(err, attest.ErrChain) {
		t.Errorf("err = %v, want ErrChain", err)
	}
}
