package verify

import (
	"errors"
	"fmt"
)

// ErrMalformedEntry marks a transaction that is not an entry in the one
// canonical form (DecodeEntry).
var ErrMalformedEntry = errors.New("malformed ledger entry")

// ErrBadSignature reports that an entry's signature does not verify under
// its submitter key: the entry was altered or signed by someone else.
var ErrBadSignature = errors.New("ledger entry: signature does not verify under the submitter key")

// Kinds of verification failure. Errors of the Check and Open functions
// wrap exactly one of them (errors.Is), inside a *VerificationError whose
// message says what was compared with what.
var (
	// ErrMalformed: something a server sent is not what the format or the
	// API promises (bad JSON, wrong hash length, counts out of range).
	ErrMalformed = errors.New("malformed response")
	// ErrQuorum: the checkpoint is not signed by validators holding more
	// than 2/3 of the voting power.
	ErrQuorum = errors.New("checkpoint lacks a 2/3 quorum of validator signatures")
	// ErrBadCheckpointSignature: a validator's signature on the checkpoint
	// does not verify.
	ErrBadCheckpointSignature = errors.New("invalid validator signature on checkpoint")
	// ErrOrigin: the checkpoint or validator set names another ledger.
	ErrOrigin = errors.New("ledger origin mismatch")
	// ErrValidatorSetChanged: the server's validator set differs from the
	// one pinned.
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

// VerificationError reports that something failed a check. Kind is one of
// the Err* values above; Detail says what exactly failed.
type VerificationError struct {
	Kind   error
	Detail string
}

func (e *VerificationError) Error() string { return e.Detail }

// Unwrap lets errors.Is match the kind.
func (e *VerificationError) Unwrap() error { return e.Kind }

// Errorf returns a *VerificationError of the given kind.
func Errorf(kind error, format string, args ...any) error {
	return &VerificationError{Kind: kind, Detail: fmt.Sprintf(format, args...)}
}

func malformed(format string, args ...any) error {
	return Errorf(ErrMalformed, "malformed ledger data: "+format, args...)
}
