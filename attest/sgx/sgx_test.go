package sgx

import (
	"context"
	"encoding/hex"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/internal/corpus"
)

func read(t testing.TB, rel string) []byte {
	return corpus.Read(t, rel)
}

// TestConformanceSGXQuote verifies dcap-qvl's SGX sample through the
// registry, as the CLI does.
func TestConformanceSGXQuote(t *testing.T) {
	ev := &attest.Evidence{Class: attest.ClassSGX, Data: read(t, "attestation/dcap/sgx_quote"), Collateral: [][]byte{read(t, "attestation/dcap/sgx_quote_collateral.json")}}
	at := time.Date(2025, 6, 20, 0, 0, 0, 0, time.UTC)
	c, err := attest.Verify(context.Background(), ev, attest.VerifyOptions{Now: at})
	if err != nil {
		t.Fatal(err)
	}
	if c.TCBStatus != "ConfigurationAndSWHardeningNeeded" || !slices.Equal(c.Advisories, []string{"INTEL-SA-00289", "INTEL-SA-00615"}) {
		t.Errorf("status %q advisories %v", c.TCBStatus, c.Advisories)
	}
	if c.Debug || c.Class != attest.ClassSGX || len(c.Measurement) != 32 {
		t.Errorf("debug %v class %s measurement %x", c.Debug, c.Class, c.Measurement)
	}
	if hex.EncodeToString(c.Measurement) != "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb" ||
		hex.EncodeToString(c.Measurements["mrsigner"]) != "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6" {
		t.Errorf("mrenclave %x mrsigner %x", c.Measurement, c.Measurements["mrsigner"])
	}
	// The default reference values accept this status; a relying party
	// that wants UpToDate only refuses it.
	if err := attest.Validate(c, attest.ReferenceValues{}, at); err != nil {
		t.Errorf("validate: %v", err)
	}
	if err := attest.Validate(c, attest.ReferenceValues{AcceptTCBStatus: []string{"UpToDate"}}, at); !errors.Is(err, attest.ErrTCB) {
		t.Errorf("validate UpToDate only: %v", err)
	}
	// A TDX quote is not SGX evidence.
	ev.Data = read(t, "attestation/dcap/tdx_quote")
	ev.Collateral = [][]byte{read(t, "attestation/dcap/tdx_quote_collateral.json")}
	if _, err := attest.Verify(context.Background(), ev, attest.VerifyOptions{Now: at}); !errors.Is(err, attest.ErrMalformed) {
		t.Errorf("tdx quote as sgx: %v", err)
	}
}

func TestSniff(t *testing.T) {
	if !Sniff(read(t, "attestation/dcap/sgx_quote")) {
		t.Error("SGX quote not sniffed")
	}
	if Sniff(read(t, "attestation/dcap/tdx_quote")) {
		t.Error("TDX quote sniffed as SGX")
	}
}
