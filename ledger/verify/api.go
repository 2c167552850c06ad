package verify

import "errors"

// What a ledger answers about an entry submitted to it. Both ledgers a
// program may append to — one embedded in the process (package ledger) and
// one over HTTP (ledger/client) — answer with these types, so the caller
// handles both the same way.

// Receipt says where an accepted entry sits in the log: its index (from 0),
// the height of the block that committed it, and its leaf hash.
type Receipt struct {
	Index    uint64
	Height   int64
	LeafHash [32]byte
}

// ErrUnavailable reports that the ledger could not take or confirm an entry
// in time (mempool full, no commit within the wait, node stopping). The
// entry may still be committed later; resubmitting it is safe because a
// second copy is refused as a replay.
var ErrUnavailable = errors.New("ledger unavailable")

// Machine-readable refusal and error codes, as in the HTTP API's "code".
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

// RefusalCodes are the codes with which the state machine refuses an
// entry (as against the API's own errors).
var RefusalCodes = []string{CodeMalformed, CodeBadSignature, CodeReplay, CodeUnauthorized,
	CodeMissingReference, CodeStaleTime, CodeTooLarge}

// RejectedError is the ledger's refusal of an entry: Code is one of
// RefusalCodes, Reason says what was wrong in words a submitter can act on.
type RejectedError struct {
	Code, Reason string
	// For a replay found among committed entries: HeldBy is the index of
	// the entry that already holds the (submitter, nonce), and SameEntry
	// says whether it has the refused entry's kind and body (the same
	// entry signed again, perhaps at another time) rather than another
	// entry under that nonce. HeldBy is nil for a repeat refused by a
	// kind's own rule (a session created twice, a grant revoked twice),
	// which has no holder.
	HeldBy    *uint64
	SameEntry bool
}

func (e *RejectedError) Error() string { return e.Reason }
