package sevsnp

import (
	"context"
	"fmt"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"

	"github.com/cloisterhq/cloister/attest"
)

// Attester produces SEV-SNP reports from inside an SNP guest.
type Attester struct {
	// Provider gets the signed report and the host's certificate table.
	// Nil means go-sev-guest's default: configfs-tsm, then /dev/sev-guest.
	Provider client.QuoteProvider
}

// Class returns attest.ClassSEVSNP.
func (*Attester) Class() attest.Class { return attest.ClassSEVSNP }

// Attest asks the AMD secure processor for a report binding reportData.
// Evidence.Data is the raw report; the certificates the host supplied with
// it (VCEK, ASK, ARK, when the host caches them) become collateral as DER.
// Without a VCEK from the host the verifier needs one from AMD's key
// distribution service for this chip and TCB.
func (a *Attester) Attest(_ context.Context, reportData [attest.ReportDataSize]byte) (*attest.Evidence, error) {
	qp := a.Provider
	if qp == nil {
		var err error
		if qp, err = client.GetQuoteProvider(); err != nil {
			return nil, fmt.Errorf("sev-snp attester: %w (this runs only inside an SEV-SNP guest)", err)
		}
	}
	if !qp.IsSupported() {
		return nil, fmt.Errorf("sev-snp attester: quote provider not supported on this machine")
	}
	raw, err := qp.GetRawQuote(reportData)
	if err != nil {
		return nil, fmt.Errorf("sev-snp attester: get report: %w", err)
	}
	if len(raw) < ReportSize {
		return nil, fmt.Errorf("sev-snp attester: device returned %d bytes, want at least %d", len(raw), ReportSize)
	}
	ev := &attest.Evidence{Class: attest.ClassSEVSNP, Data: append([]byte(nil), raw[:ReportSize]...)}
	if len(raw) > ReportSize {
		var ct abi.CertTable
		if err := ct.Unmarshal(raw[ReportSize:]); err != nil {
			return nil, fmt.Errorf("sev-snp attester: host certificate table: %w", err)
		}
		chain := ct.Proto()
		for _, der := range [][]byte{chain.GetVcekCert(), chain.GetVlekCert(), chain.GetAskCert(), chain.GetArkCert()} {
			if len(der) > 0 {
				ev.Collateral = append(ev.Collateral, der)
			}
		}
	}
	return ev, nil
}
