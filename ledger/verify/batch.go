package verify

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cloisterhq/cloister/api/protocol"
)

// A batch-signed entry (rule version 18, decision 0175) is signed
// together with up to MaxBatch-1 others by one signature over the root of
// a Merkle tree whose leaves are the entries' signing messages. Its
// transaction carries its place in that tree, so it stands alone in the
// log like any entry:
//
//	{"batch":{"count":N,"index":I,"path":[<base64 hash>,...]},"entry":{...},"sig":<base64>}
//
// The tree is RFC 6962's (the log's own hashing): a leaf is
// SHA-256(0x00 ‖ SigningMessage), an inner node SHA-256(0x01 ‖ left ‖
// right); path is the entry's audit path, leaf to root, exactly as long as
// the tree of count leaves makes it. The signature is Ed25519 by the
// entry's submitter, checked by the one signature rule (Signature), over
// BatchMessage(count, root). Each member is verified alone, with its own
// submitter key; a verifier that has checked one member's signature knows
// the others' by the same (key, root, signature), which is what makes a
// batch cheaper: one signature check per batch, not per entry.

const (
	// MaxBatch is the most entries one batch signature covers: audit
	// paths of at most 8 hashes.
	MaxBatch = 256

	batchSigningDomain = "cloister/ledger/batch/v1\n"
)

// Batch is a batch-signed entry's place in its batch.
type Batch struct {
	// Count is the number of entries signed together, 2 to MaxBatch (one
	// entry alone is signed as an entry, so it has exactly one form).
	Count int
	// Index is this entry's leaf, 0 to Count-1.
	Index int
	// Path is the entry's RFC 6962 audit path in the batch's tree.
	Path [][32]byte
}

// BatchLeaf is the leaf of an entry in its batch's tree: the RFC 6962 leaf
// hash of its signing message.
func BatchLeaf(e *Entry) [32]byte { return tlog.RecordHash(e.SigningMessage()) }

// BatchMessage is the exact byte string a batch's submitter signs: a
// domain label, the count as 8 bytes big-endian, the tree's root.
func BatchMessage(count int, root [32]byte) []byte {
	b := make([]byte, 0, len(batchSigningDomain)+8+32)
	b = append(b, batchSigningDomain...)
	b = binary.BigEndian.AppendUint64(b, uint64(count))
	return append(b, root[:]...)
}

// batchPathLen is the length of an audit path for leaf index of a tree of
// count leaves.
func batchPathLen(index, count int) int {
	n := 0
	for count > 1 {
		k := 1
		for k*2 < count {
			k *= 2
		}
		if index < k {
			count = k
		} else {
			index, count = index-k, count-k
		}
		n++
	}
	return n
}

// Root returns the root of the batch's tree computed from leaf and the
// path (RFC 9162 section 2.1.3.2), or an error if the path does not fit
// the index and count.
func (b *Batch) Root(leaf [32]byte) ([32]byte, error) {
	if b.Count < 2 || b.Count > MaxBatch || b.Index < 0 || b.Index >= b.Count {
		return [32]byte{}, fmt.Errorf("batch: index %d of count %d, want a count of 2 to %d", b.Index, b.Count, MaxBatch)
	}
	fn, sn := uint64(b.Index), uint64(b.Count-1)
	r := leaf
	for _, p := range b.Path {
		if sn == 0 {
			return [32]byte{}, fmt.Errorf("batch: audit path of %d hashes, want %d for leaf %d of %d", len(b.Path), batchPathLen(b.Index, b.Count), b.Index, b.Count)
		}
		if fn&1 == 1 || fn == sn {
			r = tlog.NodeHash(p, r)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = tlog.NodeHash(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 {
		return [32]byte{}, fmt.Errorf("batch: audit path of %d hashes, want %d for leaf %d of %d", len(b.Path), batchPathLen(b.Index, b.Count), b.Index, b.Count)
	}
	return r, nil
}

// treePaths returns the root of the tree of leaves (at least one) and
// every leaf's audit path, leaf to root: each subtree's root computed
// once.
func treePaths(leaves [][32]byte) ([32]byte, [][][32]byte) {
	if len(leaves) == 1 {
		return leaves[0], [][][32]byte{nil}
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	lr, lp := treePaths(leaves[:k])
	rr, rp := treePaths(leaves[k:])
	for i := range lp {
		lp[i] = append(lp[i], rr)
	}
	for i := range rp {
		rp[i] = append(rp[i], lr)
	}
	return tlog.NodeHash(lr, rr), append(lp, rp...)
}

// BatchItem is one entry of a batch to sign: what NewEntryWithNonce takes.
type BatchItem struct {
	Kind  Kind
	Body  any
	Nonce uint64
	Time  time.Time
}

// SignBatch builds the entries of items, all submitted by key, and signs
// them together with one signature. With one item it returns an entry
// signed alone (NewEntryWithNonce), the one form of a lone entry. Every
// entry it returns is one DecodeEntry accepts, or it returns an error.
func SignBatch(key ed25519.PrivateKey, items []BatchItem) ([]*SignedEntry, error) {
	switch {
	case len(items) == 0:
		return nil, errors.New("ledger batch: no entries")
	case len(items) > MaxBatch:
		return nil, fmt.Errorf("ledger batch: %d entries, at most %d under one signature", len(items), MaxBatch)
	case len(items) == 1:
		se, err := NewEntryWithNonce(key, items[0].Kind, items[0].Body, items[0].Nonce, items[0].Time)
		if err != nil {
			return nil, err
		}
		return []*SignedEntry{se}, nil
	}
	out := make([]*SignedEntry, len(items))
	leaves := make([][32]byte, len(items))
	for i, it := range items {
		e, err := buildEntry(key, it.Kind, it.Body, it.Nonce, it.Time)
		if err != nil {
			return nil, fmt.Errorf("ledger batch entry %d: %w", i, err)
		}
		out[i] = &SignedEntry{Entry: e}
		leaves[i] = BatchLeaf(&out[i].Entry)
	}
	root, paths := treePaths(leaves)
	sig := ed25519.Sign(key, BatchMessage(len(items), root))
	for i, se := range out {
		se.Signature = sig
		se.Batch = &Batch{Count: len(items), Index: i, Path: paths[i]}
		tx := se.Encode()
		if len(tx) > MaxEntryBytes {
			return nil, fmt.Errorf("ledger batch entry %d is %d bytes, limit %d", i, len(tx), MaxEntryBytes)
		}
		if _, err := DecodeEntry(tx); err != nil {
			return nil, fmt.Errorf("ledger batch entry %d: %w", i, err)
		}
	}
	return out, nil
}

// verifyBatch checks a batch-signed entry's signature: the root from its
// leaf and path, the submitter's signature over BatchMessage. A signature
// once verified for a (key, count, root) is remembered (batchSigs), so the
// batch's other members cost only their hashes.
func (s *SignedEntry) verifyBatch() error {
	pub, err := protocol.ParseEd25519Key(s.Entry.Submitter)
	if err != nil {
		return err
	}
	root, err := s.Batch.Root(BatchLeaf(&s.Entry))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformedEntry, err)
	}
	if len(s.Signature) != ed25519.SignatureSize {
		return ErrBadSignature
	}
	k := batchSigKey{count: s.Batch.Count, root: root, pub: [32]byte(pub), sig: [64]byte(s.Signature)}
	if batchSigs.has(k) {
		return nil
	}
	if !Signature(pub, BatchMessage(s.Batch.Count, root), s.Signature) {
		return ErrBadSignature
	}
	batchSigs.add(k)
	return nil
}

// batchSigCache remembers batch signatures that verified, by key, count,
// root and signature: only successes, so a hit is exactly what a new
// check would say (consensus stays deterministic), and a forged member
// (another entry, place or count) has another root and misses. Bounded:
// when full it starts over.
type batchSigCache struct {
	mu sync.Mutex
	m  map[batchSigKey]struct{}
}

type batchSigKey struct {
	count int
	root  [32]byte
	pub   [32]byte
	sig   [64]byte
}

const batchSigCacheMax = 1 << 14

var batchSigs = &batchSigCache{m: map[batchSigKey]struct{}{}}

func (c *batchSigCache) has(k batchSigKey) bool {
	c.mu.Lock()
	_, ok := c.m[k]
	c.mu.Unlock()
	return ok
}

func (c *batchSigCache) add(k batchSigKey) {
	c.mu.Lock()
	if len(c.m) >= batchSigCacheMax {
		clear(c.m)
	}
	c.m[k] = struct{}{}
	c.mu.Unlock()
}
