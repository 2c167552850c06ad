package tdx

import (
	"bytes"
	"context"
	"testing"

	test "github.com/google/go-tdx-guest/testing"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/dcap"
)

// TestAttesterWithFakeProvider runs the attester against go-tdx-guest's
// fake quote provider, which replays the real Sapphire Rapids quote for
// that quote's own report data, and verifies the evidence.
func TestAttesterWithFakeProvider(t *testing.T) {
	raw := read(t, "attestation/tdx/tdx_prod_quote_SPR_E4.dat")
	q, err := dcap.ParseQuote(raw)
	if err != nil {
		t.Fatal(err)
	}
	var rd, other [64]byte
	copy(rd[:], q.ReportData())
	other[0] = 1
	qp, err := test.TcQuoteProvider([]test.TestCase{{Name: "real", Input: rd, Quote: raw}, {Name: "wrong", Input: other, Quote: raw}})
	if err != nil {
		t.Fatal(err)
	}
	a := &Attester{Provider: qp}
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Class != attest.ClassTDX || !bytes.Equal(ev.Data, raw) {
		t.Fatal("evidence is not the provider's quote")
	}
	c, err := verifyAt(ev, at2023)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.ReportData, rd[:]) {
		t.Errorf("report data %x", c.ReportData)
	}
	// A provider answering with a quote for other report data is caught.
	if _, err := a.Attest(context.Background(), other); err == nil {
		t.Error("attester accepted a quote for other report data")
	}
}
