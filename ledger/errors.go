package ledger

import (
	"fmt"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// Refusals are *verify.RejectedError with one of verify's Code* values, and
// ErrUnavailable is verify.ErrUnavailable: an embedded ledger and the HTTP
// client (ledger/client) answer with the same types.

func reject(code, format string, args ...any) *verify.RejectedError {
	return &verify.RejectedError{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// abciCodes numbers the refusal codes for CheckTx and FinalizeBlock results
// (ABCI wants a uint32; 0 is success). The numbers are part of the chain's
// block results and must not be reordered.
var abciCodes = []string{"", verify.CodeMalformed, verify.CodeBadSignature, verify.CodeReplay, verify.CodeUnauthorized,
	verify.CodeMissingReference, verify.CodeStaleTime, verify.CodeTooLarge, verify.CodeUnavailable}

const abciCodespace = "cloister.ledger"

func abciCode(code string) uint32 {
	for i, c := range abciCodes {
		if c == code {
			return uint32(i)
		}
	}
	return 1
}

func codeFromABCI(n uint32) string {
	if int(n) < len(abciCodes) && n > 0 {
		return abciCodes[n]
	}
	return verify.CodeMalformed
}
