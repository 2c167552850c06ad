package ledger

import (
	"context"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// Appender appends signed entries to the ledger. Append returns once the
// entry is committed; a refusal by the state machine is a
// *verify.RejectedError, a timeout or overload wraps verify.ErrUnavailable.
// An embedded ledger and ledger/client's Client both implement it.
type Appender interface {
	Append(ctx context.Context, e *verify.SignedEntry) (verify.Receipt, error)
}
