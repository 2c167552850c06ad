package client

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// Verification failures are *verify.VerificationError, matched with
// errors.Is against verify's kinds (verify.ErrQuorum, verify.ErrRewound,
// verify.ErrInconsistent, verify.ErrNotIncluded, …). A response that is
// not what the API promises is verify.ErrMalformed.

func verr(kind error, format string, args ...any) error { return verify.Errorf(kind, format, args...) }

func malformed(format string, args ...any) error {
	return verify.Errorf(verify.ErrMalformed, "malformed ledger response: "+format, args...)
}

// ErrNotFound is matched (errors.Is) by an *APIError with code not_found.
var ErrNotFound = errors.New("not found")

// APIError is an error response from the ledger that is not a refusal of an
// entry by the state machine (those are *verify.RejectedError): unknown
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
// errors.Is(err, verify.ErrUnavailable) for unavailable ones (no commit
// within the server's wait, overload): resubmitting the same entry is safe,
// a second copy is refused as a replay.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == "not_found" || e.Code == "" && e.Status == 404
	case verify.ErrUnavailable:
		return e.Code == "unavailable" || e.Code == "" && e.Status == 503
	}
	return false
}

// isRefusal reports whether code is one with which the state machine (or
// its admission check) refuses an entry; those become
// *verify.RejectedError.
func isRefusal(code string) bool { return slices.Contains(verify.RefusalCodes, code) }

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
