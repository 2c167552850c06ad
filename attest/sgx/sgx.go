package sgx

import (
	"context"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/dcap"
)

// Verifier verifies SGX DCAP quotes. The zero value is ready to use.
type Verifier struct{}

func init() { attest.Register(Verifier{}) }

// Class returns attest.ClassSGX.
func (Verifier) Class() attest.Class { return attest.ClassSGX }

// Verify checks an SGX quote and its optional collateral as of
// opts.Time().
func (Verifier) Verify(_ context.Context, ev *attest.Evidence, opts attest.VerifyOptions) (*attest.Claims, error) {
	return dcap.VerifyEvidence(ev, opts, false)
}

// Sniff reports whether data looks like an SGX DCAP quote.
func Sniff(data []byte) bool {
	return dcap.Sniff(data) && len(data) >= 8 && data[4] == 0 && data[5] == 0 && data[6] == 0 && data[7] == 0
}
