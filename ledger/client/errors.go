package client

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/cloisterhq/cloister/ledger"
)

// Kinds of verification failure. Errors returned by Verify and the Verify*
// functions wrap exactly one of them (errors.Is), inside a
// *VerificationError whose message says what was compared with what.
var (
	// ErrMalformed: a response is not what the API promises (bad JSON,
	// wrong hash length, counts out of range, an index other than the one
	// asked for).
	ErrMalformed = errors.New("malformed response")
	// ErrQuorum: the checkpoint is not signed by validators holding more
	// than 2/3 of the voting power.
	ErrQuorum = errors.New("checkpoint lacks a 2/3 quorum of validator signatures")
	// ErrBadCheckpointSignature: a pinned validator's signature on the
	// checkpoint does not verify.
	ErrBadCheckpointSignature = errors.New("invalid validator signature on checkpoint")
	// ErrOrigin: the checkpoint or validator set names another ledger.
	ErrOrigin = errors.New("ledger origin mismatch")
	// ErrValidatorSetChanged: the server's validator set differs from the
	// one pinned in the state file.
	ErrValidatorSetChanged = errors.New("validator set differs from the pinned one")
	// ErrRewound: the server's checkpoint is smaller than the trusted one.
	ErrRewound = errors.New("server shows an older/rewound log")
	// ErrInconsistent: the server's log is not an extension of the trusted
	// one (fork or rewrite).
	ErrInconsistent = errors.New("log is not an extension of the trusted log")
	// ErrNotIncluded: the entry is not in the checkpointed log (the
	// inclusion proof does not verify, or the entry bytes do not match the
	// leaf).
	ErrNotIncluded = errors.New("entry is not included in the checkpointed log")
	// ErrEntrySignature: the entry's submitter signature does not verify.
	ErrEntrySignature = errors.New("entry signature does not verify")
)

// VerificationError reports that something the server sent failed a check.
// Kind is one of the Err* values above; Detail says what exactly failed.
type VerificationError struct {
	Kind   error
	Detail string
}

func (e *VerificationError) Error() string { return e.Detail }

// Unwrap lets errors.Is match the kind.
func (e *VerificationError) Unwrap() error { return e.Kind }

func verr(kind error, format string, args ...any) error {
	return &VerificationError{Kind: kind, Detail: fmt.Sprintf(format, args...)}
}

func malformed(format string, args ...any) error {
	return verr(ErrMalformed, "malformed ledger response: "+format, args...)
}

// ErrNotFound is matched (errors.Is) by an *APIError with code not_found.
var ErrNotFound = errors.New("not found")

// APIError is an error response from the ledger that is not a refusal of an
// entry by the state machine (those are *ledger.RejectedError): unknown
// index, proof not available yet, server unavailable.
type APIError struct {
	Op      string // e.g. "GET /v1/entries/7"
	Status  int    // HTTP status; 0 for one entry's error inside a batch answer
	Code    string // machine code from the body, "" if none
	Message string // the server's reason, sanitised
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ledger %s:", e.Op)
	if e.Status != 0 {
		fmt.Fprintf(&b, " HTTP %d", e.Status)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " (%s)", e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrNotFound) true for not_found responses, and
// errors.Is(err, ledger.ErrUnavailable) for unavailable ones (no commit
// within the server's wait, overload): resubmitting the same entry is safe,
// a second copy is refused as a replay.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == "not_found" || e.Code == "" && e.Status == 404
	case ledger.ErrUnavailable:
		return e.Code == "unavailable" || e.Code == "" && e.Status == 503
	}
	return false
}

// refusalCodes are the codes with which the state machine (or its
// admission check) refuses an entry; they become *ledger.RejectedError.
var refusalCodes = map[string]bool{
	"malformed": true, "bad_signature": true, "replay": true, "unauthorized": true,
	"missing_reference": true, "stale_time": true, "too_large": true,
}

const maxReasonLen = 512

// sanitize makes a server-supplied string safe to print on a terminal: no
// control characters (escape sequences), bounded length.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= maxReasonLen {
			b.WriteString("…")
			break
		}
		switch {
		case r == unicode.ReplacementChar, unicode.IsControl(r), unicode.Is(unicode.Bidi_Control, r):
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// validCode reports whether s looks like an API error code.
func validCode(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && c != '_' {
			return false
		}
	}
	return true
}
