package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// Append submits one signed entry and waits until it is committed (the
// server waits up to 30 s). A refusal by the state machine is returned as
// a *verify.RejectedError carrying the server's code and reason. The
// receipt's leaf hash is checked against the entry sent.
func (c *Client) Append(ctx context.Context, e *verify.SignedEntry) (verify.Receipt, error) {
	tx := e.Encode()
	b, err := c.do(ctx, "POST", "/v1/entries", nil, tx, maxSmallResponse, true)
	if err != nil {
		return verify.Receipt{}, err
	}
	return parseReceipt(b, tx)
}

// MaxAppendBatch is the most entries AppendBatch sends in one request, so
// that the request and its answer stay bounded.
const MaxAppendBatch = 1000

// AppendBatch submits several entries in one request. The results are in
// the order of entries. With wait, each admitted entry's result carries
// its receipt once committed; without, the server answers after mempool
// admission and results carry only Admitted or a refusal.
func (c *Client) AppendBatch(ctx context.Context, entries []*verify.SignedEntry, wait bool) ([]BatchResult, error) {
	if len(entries) == 0 || len(entries) > MaxAppendBatch {
		return nil, fmt.Errorf("ledger batch: %d entries, want 1 to %d", len(entries), MaxAppendBatch)
	}
	txs := make([][]byte, len(entries))
	var body bytes.Buffer
	body.WriteString(`{"entries":[`)
	for i, e := range entries {
		txs[i] = e.Encode()
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(txs[i])
	}
	body.WriteString(`]}`)
	var q url.Values
	if !wait {
		q = url.Values{"wait": {"false"}}
	}
	b, err := c.do(ctx, "POST", "/v1/entries/batch", q, body.Bytes(), int64(len(entries))*1024+1024, true)
	if err != nil {
		return nil, err
	}
	return parseBatch(b, txs, wait)
}

// Get fetches entry index. The entry is checked for shape and its bytes
// against the served leaf hash, not for inclusion (see Verify).
func (c *Client) Get(ctx context.Context, index uint64) (*Entry, error) {
	b, err := c.do(ctx, "GET", "/v1/entries/"+strconv.FormatUint(index, 10), nil, nil, maxEntryJSON, false)
	if err != nil {
		return nil, err
	}
	return parseEntry(b, index)
}

// Entries fetches up to limit (1 to 1000) consecutive entries from index
// from, and the log size at the time. An empty page means from ≥ size.
func (c *Client) Entries(ctx context.Context, from uint64, limit int) (*Page, error) {
	if limit < 1 || limit > maxPageEntries {
		return nil, fmt.Errorf("ledger entries: limit %d, want 1 to %d", limit, maxPageEntries)
	}
	q := url.Values{"from": {strconv.FormatUint(from, 10)}, "limit": {strconv.Itoa(limit)}}
	b, err := c.do(ctx, "GET", "/v1/entries", q, nil, int64(limit)*maxEntryJSON+1024, false)
	if err != nil {
		return nil, err
	}
	return parsePage(b, from, limit)
}

// Checkpoint fetches the latest cosigned checkpoint and parses it. Its
// signatures are NOT checked: pass Note to verify.OpenCheckpoint, or use
// Verify.
func (c *Client) Checkpoint(ctx context.Context) (*verify.Checkpoint, error) {
	b, err := c.do(ctx, "GET", "/v1/checkpoint", nil, nil, maxCheckpointText, false)
	if err != nil {
		return nil, err
	}
	return verify.ParseCheckpointNote(b)
}

// Validators fetches the validator set and checks its internal
// consistency (not whether it is the right one: that is what pinning in
// the state file is for).
func (c *Client) Validators(ctx context.Context) (*verify.ValidatorSet, error) {
	b, err := c.do(ctx, "GET", "/v1/validators", nil, nil, maxValidatorsJSON, false)
	if err != nil {
		return nil, err
	}
	return parseValidators(b)
}

// InclusionProof fetches the audit path of entry index in the tree of size
// leaves.
func (c *Client) InclusionProof(ctx context.Context, index, size uint64) (*verify.InclusionProof, error) {
	if index >= size || size > maxTreeSize {
		return nil, fmt.Errorf("ledger inclusion proof: index %d not below size %d", index, size)
	}
	q := url.Values{"index": {strconv.FormatUint(index, 10)}, "size": {strconv.FormatUint(size, 10)}}
	b, err := c.do(ctx, "GET", "/v1/proof/inclusion", q, nil, maxSmallResponse, false)
	if err != nil {
		return nil, err
	}
	return parseInclusion(b, index, size)
}

// ConsistencyProof fetches the proof that the tree of size from is a
// prefix of the tree of size to (0 < from ≤ to).
func (c *Client) ConsistencyProof(ctx context.Context, from, to uint64) (*verify.ConsistencyProof, error) {
	if from == 0 || from > to || to > maxTreeSize {
		return nil, fmt.Errorf("ledger consistency proof: sizes %d to %d, want 0 < from ≤ to", from, to)
	}
	q := url.Values{"from": {strconv.FormatUint(from, 10)}, "to": {strconv.FormatUint(to, 10)}}
	b, err := c.do(ctx, "GET", "/v1/proof/consistency", q, nil, maxSmallResponse, false)
	if err != nil {
		return nil, err
	}
	return parseConsistency(b, from, to)
}

// Status fetches the server's own, unverified, view of the ledger.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	b, err := c.do(ctx, "GET", "/v1/status", nil, nil, maxSmallResponse, false)
	if err != nil {
		return nil, err
	}
	return parseStatus(b)
}

// IsRejected reports whether err is a refusal by the state machine and
// returns it.
func IsRejected(err error) (*verify.RejectedError, bool) {
	var r *verify.RejectedError
	ok := errors.As(err, &r)
	return r, ok
}
