package ledger

import "context"

// Receipt says where an accepted entry sits in the log: its index (from 0),
// the height of the block that committed it, and its RFC 6962 leaf hash.
type Receipt struct {
	Index    uint64
	Height   int64
	LeafHash [32]byte
}

// Appender appends signed entries to the ledger. Append returns once the
// entry is committed; a refusal by the state machine is a *RejectedError,
// a timeout or overload wraps ErrUnavailable.
type Appender interface {
	Append(ctx context.Context, e *SignedEntry) (Receipt, error)
}
