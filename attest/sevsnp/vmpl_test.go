package sevsnp

import (
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	test "github.com/google/go-sev-guest/testing"

	"github.com/cloisterhq/cloister/attest"
)

// TestVMPLJudged: a report the (fake) secure processor signed for a
// request at VMPL 2 — software running under a paravisor or SVSM — says so
// in its claims, and reference values that require VMPL 0 refuse it.
func TestVMPLJudged(t *testing.T) {
	// Not parallel: go-sev-guest's test device shares one math/rand source.
	var rd [64]byte
	copy(rd[:], "cloister sev-snp vmpl test")
	now := time.Now()
	report := test.CreateRawReport(&test.TestReportOptions{ReportData: rd[:]})
	binary.LittleEndian.PutUint32(report[0x30:0x34], 2) // VMPL
	qp, err := test.TcQuoteProvider([]test.TestCase{{Name: "vmpl2", Input: rd, Output: report}}, &test.DeviceOptions{Now: now, Product: abi.DefaultSevProduct()})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := (&Attester{Provider: qp}).Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	opts := attest.VerifyOptions{Now: now, ReplaceRoots: true, Roots: []*x509.Certificate{qp.Device.Signer.Ark}, AllowDebug: true}
	c, err := attest.Verify(context.Background(), ev, opts)
	if err != nil {
		t.Fatal(err)
	}
	if c.VMPL == nil || *c.VMPL != 2 {
		t.Fatalf("claims VMPL %v, want 2", c.VMPL)
	}
	zero, two := uint32(0), uint32(2)
	if err := attest.Validate(c, attest.ReferenceValues{AllowDebug: true, MaxVMPL: &zero}, now); !errors.Is(err, attest.ErrTCB) {
		t.Errorf("VMPL 2 against a maximum of 0: %v, want ErrTCB", err)
	}
	if err := attest.Validate(c, attest.ReferenceValues{AllowDebug: true, MaxVMPL: &two}, now); err != nil {
		t.Errorf("VMPL 2 against a maximum of 2: %v", err)
	}
	// Evidence of a class without VMPLs fails a VMPL requirement.
	if err := attest.Validate(&attest.Claims{Class: attest.ClassTDX}, attest.ReferenceValues{MaxVMPL: &zero}, now); !errors.Is(err, attest.ErrTCB) {
		t.Errorf("TDX claims against a VMPL requirement: %v", err)
	}
}
