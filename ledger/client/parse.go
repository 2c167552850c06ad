package client

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// Bounds on what a response may claim. Proof lengths follow from the tree
// size being at most 2^63-1: an inclusion proof has at most 63 hashes, a
// consistency proof at most about twice that.
const (
	maxInclusionHashes   = 64
	maxConsistencyHashes = 130
	maxTreeSize          = math.MaxInt64 // tlog counts in int64
)

// hash32 is a 32-byte hash carried in JSON as standard padded base64.
type hash32 [32]byte

func (h *hash32) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("hash: want a base64 string")
	}
	d, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(d) != 32 {
		return fmt.Errorf("hash %.60q: want standard base64 of 32 bytes", s)
	}
	copy(h[:], d)
	return nil
}

// Entry is one log entry as served by the ledger, checked for shape: its
// bytes are a canonical signed entry and hash to LeafHash. Its submitter
// signature and its inclusion in a checkpoint are not checked here (Verify
// does both).
type Entry struct {
	Index    uint64
	Height   int64
	LeafHash [32]byte
	// Tx is the transaction: the canonical JSON of the signed entry, the
	// exact bytes hashed into the log.
	Tx     []byte
	Signed *verify.SignedEntry
}

type wireEntry struct {
	Index    *uint64         `json:"index"`
	Height   *int64          `json:"height"`
	LeafHash *hash32         `json:"leaf_hash"`
	Entry    json.RawMessage `json:"entry"`
}

func (w *wireEntry) check() (*Entry, error) {
	switch {
	case w.Index == nil:
		return nil, malformed(`entry: missing "index"`)
	case w.Height == nil:
		return nil, malformed(`entry %d: missing "height"`, *w.Index)
	case w.LeafHash == nil:
		return nil, malformed(`entry %d: missing "leaf_hash"`, *w.Index)
	case len(w.Entry) == 0:
		return nil, malformed(`entry %d: missing "entry"`, *w.Index)
	}
	if *w.Index > maxTreeSize-1 {
		return nil, malformed("entry index %d out of range", *w.Index)
	}
	if *w.Height < 1 {
		return nil, malformed("entry %d: height %d, want ≥ 1", *w.Index, *w.Height)
	}
	tx := bytes.Clone(w.Entry)
	if got := verify.LeafHash(tx); got != *w.LeafHash {
		return nil, verr(verify.ErrNotIncluded, "entry %d as served does not hash to the leaf hash the server reports (bytes hash to %s, server says %s): the entry bytes were altered",
			*w.Index, b64(got[:]), b64(w.LeafHash[:]))
	}
	se, err := verify.DecodeEntry(tx)
	if err != nil {
		return nil, malformed("entry %d: %v", *w.Index, err)
	}
	return &Entry{Index: *w.Index, Height: *w.Height, LeafHash: *w.LeafHash, Tx: tx, Signed: se}, nil
}

// parseEntry parses GET /v1/entries/{index}; want is the index asked for.
func parseEntry(b []byte, want uint64) (*Entry, error) {
	var w wireEntry
	if err := decodeStrict(b, &w); err != nil {
		return nil, malformed("entry %d: %v", want, err)
	}
	e, err := w.check()
	if err != nil {
		return nil, err
	}
	if e.Index != want {
		return nil, malformed("asked for entry %d, got entry %d", want, e.Index)
	}
	return e, nil
}

// Page is a run of consecutive entries and the log size when it was read.
type Page struct {
	Size    uint64
	Entries []*Entry
}

// parsePage parses GET /v1/entries?from=&limit=.
func parsePage(b []byte, from uint64, limit int) (*Page, error) {
	var w struct {
		Size    *uint64      `json:"size"`
		Entries []*wireEntry `json:"entries"`
	}
	if err := decodeStrict(b, &w); err != nil {
		return nil, malformed("entries from %d: %v", from, err)
	}
	if w.Size == nil {
		return nil, malformed(`entries: missing "size"`)
	}
	if *w.Size > maxTreeSize {
		return nil, malformed("entries: size %d out of range", *w.Size)
	}
	if len(w.Entries) > limit {
		return nil, malformed("entries: asked for at most %d, got %d", limit, len(w.Entries))
	}
	p := &Page{Size: *w.Size, Entries: make([]*Entry, 0, len(w.Entries))}
	for i, we := range w.Entries {
		if we == nil {
			return nil, malformed("entries: item %d is null", i)
		}
		e, err := we.check()
		if err != nil {
			return nil, err
		}
		if want := from + uint64(i); e.Index != want {
			return nil, malformed("entries: item %d has index %d, want %d", i, e.Index, want)
		}
		if e.Index >= p.Size {
			return nil, malformed("entries: index %d beyond the log size %d", e.Index, p.Size)
		}
		p.Entries = append(p.Entries, e)
	}
	return p, nil
}

type wireReceipt struct {
	Index    *uint64 `json:"index"`
	Height   *int64  `json:"height"`
	LeafHash *hash32 `json:"leaf_hash"`
}

func (w *wireReceipt) check(tx []byte) (verify.Receipt, error) {
	if w.Index == nil || w.Height == nil || w.LeafHash == nil {
		return verify.Receipt{}, malformed(`receipt: want "index", "height" and "leaf_hash"`)
	}
	if *w.Index > maxTreeSize-1 || *w.Height < 1 {
		return verify.Receipt{}, malformed("receipt: index %d or height %d out of range", *w.Index, *w.Height)
	}
	if want := verify.LeafHash(tx); want != *w.LeafHash {
		return verify.Receipt{}, malformed("receipt: leaf hash %s is not the hash of the entry sent (%s)", b64(w.LeafHash[:]), b64(want[:]))
	}
	return verify.Receipt{Index: *w.Index, Height: *w.Height, LeafHash: *w.LeafHash}, nil
}

// parseReceipt parses the answer to POST /v1/entries for transaction tx.
func parseReceipt(b, tx []byte) (verify.Receipt, error) {
	var w wireReceipt
	if err := decodeStrict(b, &w); err != nil {
		return verify.Receipt{}, malformed("receipt: %v", err)
	}
	return w.check(tx)
}

// BatchResult is the outcome of one entry of a batch: a receipt, or Err
// (a *verify.RejectedError when the state machine refused it). With
// wait=false an admitted entry has no receipt yet: Admitted is set and
// Receipt is zero.
type BatchResult struct {
	Receipt  verify.Receipt
	Admitted bool
	Err      error
}

// parseBatch parses the answer to POST /v1/entries/batch for txs.
func parseBatch(b []byte, txs [][]byte, wait bool) ([]BatchResult, error) {
	var w struct {
		Results []json.RawMessage `json:"results"`
	}
	if err := decodeStrict(b, &w); err != nil {
		return nil, malformed("batch: %v", err)
	}
	if len(w.Results) != len(txs) {
		return nil, malformed("batch: sent %d entries, got %d results", len(txs), len(w.Results))
	}
	out := make([]BatchResult, len(txs))
	for i, raw := range w.Results {
		var r struct {
			wireReceipt
			Pending bool    `json:"pending"`
			Error   *string `json:"error"`
			Code    string  `json:"code"`
		}
		if err := decodeStrict(raw, &r); err != nil {
			return nil, malformed("batch result %d: %v", i, err)
		}
		switch {
		case r.Error != nil:
			code := r.Code
			if !validCode(code) {
				code = "unknown"
			}
			reason := sanitize(*r.Error)
			if reason == "" {
				reason = "refused (" + code + ")"
			}
			if isRefusal(code) {
				out[i].Err = &verify.RejectedError{Code: code, Reason: reason}
			} else {
				out[i].Err = &APIError{Op: fmt.Sprintf("POST /v1/entries/batch (entry %d)", i), Code: code, Message: reason}
			}
		case !wait && (r.Pending || r.Index == nil):
			// Admitted to the mempool, not committed yet: no index.
			if r.LeafHash != nil && *r.LeafHash != verify.LeafHash(txs[i]) {
				return nil, malformed("batch result %d: leaf hash is not the hash of the entry sent", i)
			}
			out[i].Admitted = true
		default:
			rc, err := r.wireReceipt.check(txs[i])
			if err != nil {
				return nil, fmt.Errorf("batch result %d: %w", i, err)
			}
			out[i].Receipt, out[i].Admitted = rc, true
		}
	}
	return out, nil
}

// InclusionProof proves that the leaf at Index is in the tree of Size
// leaves.
type InclusionProof struct {
	Index, Size uint64
	LeafHash    [32]byte
	Hashes      [][32]byte
}

func parseInclusion(b []byte, index, size uint64) (*verify.InclusionProof, error) {
	var w struct {
		Index    *uint64  `json:"index"`
		Size     *uint64  `json:"size"`
		LeafHash *hash32  `json:"leaf_hash"`
		Hashes   []hash32 `json:"hashes"`
	}
	if err := decodeStrict(b, &w); err != nil {
		return nil, malformed("inclusion proof: %v", err)
	}
	if w.Index == nil || w.Size == nil || w.LeafHash == nil || w.Hashes == nil {
		return nil, malformed(`inclusion proof: want "index", "size", "leaf_hash" and "hashes"`)
	}
	if *w.Index != index || *w.Size != size {
		return nil, malformed("inclusion proof: asked for index %d in size %d, got index %d in size %d", index, size, *w.Index, *w.Size)
	}
	if len(w.Hashes) > maxInclusionHashes {
		return nil, malformed("inclusion proof: %d hashes, at most %d possible", len(w.Hashes), maxInclusionHashes)
	}
	p := &verify.InclusionProof{Index: index, Size: size, LeafHash: *w.LeafHash, Hashes: make([][32]byte, len(w.Hashes))}
	for i, h := range w.Hashes {
		p.Hashes[i] = h
	}
	return p, nil
}

// ConsistencyProof proves that the tree of From leaves is a prefix of the
// tree of To leaves.
type ConsistencyProof struct {
	From, To uint64
	Hashes   [][32]byte
}

func parseConsistency(b []byte, from, to uint64) (*verify.ConsistencyProof, error) {
	var w struct {
		From   *uint64  `json:"from"`
		To     *uint64  `json:"to"`
		Hashes []hash32 `json:"hashes"`
	}
	if err := decodeStrict(b, &w); err != nil {
		return nil, malformed("consistency proof: %v", err)
	}
	if w.From == nil || w.To == nil || w.Hashes == nil {
		return nil, malformed(`consistency proof: want "from", "to" and "hashes"`)
	}
	if *w.From != from || *w.To != to {
		return nil, malformed("consistency proof: asked for %d to %d, got %d to %d", from, to, *w.From, *w.To)
	}
	if len(w.Hashes) > maxConsistencyHashes {
		return nil, malformed("consistency proof: %d hashes, at most %d possible", len(w.Hashes), maxConsistencyHashes)
	}
	p := &verify.ConsistencyProof{From: from, To: to, Hashes: make([][32]byte, len(w.Hashes))}
	for i, h := range w.Hashes {
		p.Hashes[i] = h
	}
	return p, nil
}

// Status is the ledger's own view of itself. Nothing in it is verified: use
// it to see progress, and Verify to trust anything.
type Status struct {
	ChainID string
	Height  int64
	Size    uint64
	Root    [32]byte
	// CheckpointSize is the size of the latest cosigned checkpoint;
	// Checkpointed is false while there is none yet.
	CheckpointSize uint64
	Checkpointed   bool
	// RulesVersion is the rule version that judges the next block (0 from
	// a ledger too old to say); Rules the schedule of versions by height.
	RulesVersion int
	Rules        []RuleStep
	// Peers and CatchingUp are the serving validator's view of its
	// connections and of its sync (0 and false from a ledger too old to
	// say).
	Peers      int
	CatchingUp bool
}

// RuleStep is one step of a ledger's rule schedule: Version is in force
// from block Height on.
type RuleStep struct {
	Height  int64 `json:"height"`
	Version int   `json:"version"`
}

func parseStatus(b []byte) (*Status, error) {
	var w struct {
		ChainID        *string    `json:"chain_id"`
		Height         *int64     `json:"height"`
		Size           *uint64    `json:"size"`
		Root           *hash32    `json:"root"`
		CheckpointSize *uint64    `json:"checkpoint_size"`
		RulesVersion   int        `json:"rules_version"`
		Rules          []RuleStep `json:"rules"`
		Peers          int        `json:"peers"`
		CatchingUp     bool       `json:"catching_up"`
	}
	if err := decodeStrict(b, &w); err != nil {
		return nil, malformed("status: %v", err)
	}
	if w.ChainID == nil || w.Height == nil || w.Size == nil || w.Root == nil {
		return nil, malformed(`status: want "chain_id", "height", "size" and "root"`)
	}
	if err := verify.CheckChainID(*w.ChainID); err != nil {
		return nil, malformed("status: %v", err)
	}
	st := &Status{ChainID: *w.ChainID, Height: *w.Height, Size: *w.Size, Root: *w.Root, RulesVersion: w.RulesVersion, Rules: w.Rules,
		Peers: w.Peers, CatchingUp: w.CatchingUp}
	if len(st.Rules) > 64 || st.RulesVersion < 0 || st.Peers < 0 {
		return nil, malformed("status: %d rule steps, version %d", len(st.Rules), st.RulesVersion)
	}
	if w.CheckpointSize != nil { // null until the first checkpoint is cosigned
		st.CheckpointSize, st.Checkpointed = *w.CheckpointSize, true
	}
	if st.Height < 0 || st.Size > maxTreeSize || st.CheckpointSize > st.Size {
		return nil, malformed("status: height %d, size %d, checkpoint size %d out of range", st.Height, st.Size, st.CheckpointSize)
	}
	return st, nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// parseValidators parses GET /v1/validators and checks the set's own
// consistency (verify.ValidatorSet.Check).
func parseValidators(b []byte) (*verify.ValidatorSet, error) {
	var vs verify.ValidatorSet
	if err := decodeStrict(b, &vs); err != nil {
		return nil, malformed("validators: %v", err)
	}
	if err := vs.Check(); err != nil {
		return nil, malformed("validators: %v", err)
	}
	return &vs, nil
}
