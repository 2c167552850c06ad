package ledger

import (
	"errors"
	"fmt"
)

// ErrBadSignature reports that an entry's signature does not verify under
// its submitter key: the entry was altered or signed by someone else.
var ErrBadSignature = errors.New("ledger entry: signature does not verify under the submitter key")

// ErrUnavailable reports that the ledger could not take or confirm an entry
// in time (mempool full, no commit within the wait, node stopping). The
// entry may still be committed later; resubmitting it is safe because a
// second copy is refused as a replay.
var ErrUnavailable = errors.New("ledger unavailable")

// Machine-readable error codes, as in the HTTP API's "code" field.
const (
	CodeMalformed        = "malformed"
	CodeBadSignature     = "bad_signature"
	CodeReplay           = "replay"
	CodeUnauthorized     = "unauthorized"
	CodeMissingReference = "missing_reference"
	CodeStaleTime        = "stale_time"
	CodeTooLarge         = "too_large"
	CodeNotFound         = "not_found"
	CodeNotCheckpointed  = "not_checkpointed"
	CodeUnavailable      = "unavailable"
)

// RejectedError is the state machine's refusal of an entry: Code is one of
// the Code* constants, Reason says what was wrong in words a submitter can
// act on. It is returned as *RejectedError.
type RejectedError struct {
	Code, Reason string
	// For a replay found among committed entries: HeldBy is the index of
	// the entry that already holds the (submitter, nonce), and SameEntry
	// says whether it has the refused entry's kind and body (the same
	// entry signed again, perhaps at another time) rather than another
	// entry under that nonce — also when both reached the mempool together
	// and the block took the other (the answer comes once it is
	// committed). HeldBy is nil for a repeat refused by a kind's own rule
	// (a session created twice, a grant revoked twice), which has no
	// holder.
	HeldBy    *uint64
	SameEntry bool
	// nonceHeld marks the state machine's refusal of a used nonce (as
	// against a repeat refused by a kind's own rule, which has no holder).
	nonceHeld bool
}

func (e *RejectedError) Error() string { return e.Reason }

func reject(code, format string, args ...any) *RejectedError {
	return &RejectedError{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// abciCodes numbers the refusal codes for CheckTx and FinalizeBlock results
// (ABCI wants a uint32; 0 is success). The numbers are part of the chain's
// block results and must not be reordered.
var abciCodes = []string{"", CodeMalformed, CodeBadSignature, CodeReplay, CodeUnauthorized,
	CodeMissingReference, CodeStaleTime, CodeTooLarge, CodeUnavailable}

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
	return CodeMalformed
}
