package ledger

import "errors"

// ErrBadSignature reports that an entry's signature does not verify under
// its submitter key: the entry was altered or signed by someone else.
var ErrBadSignature = errors.New("ledger entry: signature does not verify under the submitter key")
