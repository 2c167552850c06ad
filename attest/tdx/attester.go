package tdx

import (
	"bytes"
	"context"
	"fmt"

	"github.com/google/go-tdx-guest/client"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/dcap"
)

// Attester produces TDX quotes from inside a TD.
type Attester struct {
	// Provider gets quotes; nil means go-tdx-guest's configfs-tsm
	// provider, falling back to /dev/tdx_guest.
	Provider client.QuoteProvider
}

// Class returns attest.ClassTDX.
func (*Attester) Class() attest.Class { return attest.ClassTDX }

// Attest asks the TDX module and the quoting enclave for a quote binding
// reportData. The quote carries its PCK chain; collateral (TCB info, QE
// identity, CRLs) is for the verifier to bring.
func (a *Attester) Attest(_ context.Context, reportData [attest.ReportDataSize]byte) (*attest.Evidence, error) {
	var qp any = a.Provider
	if a.Provider == nil {
		p, err := client.GetQuoteProvider()
		if err != nil {
			return nil, fmt.Errorf("tdx attester: %w (this runs only inside a TDX guest)", err)
		}
		qp = p
	}
	raw, err := client.GetRawQuote(qp, reportData)
	if err != nil {
		return nil, fmt.Errorf("tdx attester: get quote: %w", err)
	}
	q, err := dcap.ParseQuote(raw)
	if err != nil {
		return nil, fmt.Errorf("tdx attester: the quote provider returned %d bytes that are not a quote: %w", len(raw), err)
	}
	if !q.IsTDX() {
		return nil, fmt.Errorf("tdx attester: the quote provider returned an SGX quote")
	}
	if !bytes.Equal(q.ReportData(), reportData[:]) {
		return nil, fmt.Errorf("tdx attester: the quote binds report data %x, not the requested %x", q.ReportData(), reportData)
	}
	return &attest.Evidence{Class: attest.ClassTDX, Data: raw}, nil
}
