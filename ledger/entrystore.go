package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// How the entries bucket stores a transaction (decisions 0173, 0175). The
// log, its proofs, the API and snapshots know only the transaction's
// bytes, the one canonical JSON form the submitter signed; the store keeps
// a shorter form of the same bytes and gives them back exactly:
//
//	plain   be64(height) ‖ tx                       (every store before 0173; height < 2^56, so the first byte is 0)
//	packed  0x01 ‖ uvarint(height) ‖ fields
//	batch   0x02 ‖ uvarint(height) ‖ uvarint(count) ‖ uvarint(index) ‖ uvarint(len(path))
//	        ‖ path (32 each) ‖ fields
//	next    0x03 ‖ uvarint(height) ‖ uvarint(index) ‖ uvarint(len(path)) ‖ uvarint(mask)
//	        ‖ the path's hashes the mask does not name (32 each) ‖ fields, without
//	        the signature, and without the submitter key if mask bit 8 is set
//
//	fields  uvarint(len(kind)) ‖ kind ‖ uvarint(nonce) ‖ submitter key (32)
//	        ‖ varint(time, Unix ms) ‖ signature (64) ‖ body
//
// The packed form drops what the canonical form spells the same way for
// every entry (member names, quotes, the "ed25519:" prefix) and the base64
// and decimal spellings of the key, the signature and the time. A
// batch-signed entry (rule version 18) adds its place and audit path.
// "next" is a batch-signed entry whose log predecessor is a member of the
// same batch (same count and signature): it takes the count, the
// signature and, with mask bit 8, the submitter from it, and each path
// hash whose mask bit (bit l for level l) is set from it too — level 0
// from the predecessor's own leaf (its sibling when both are in order),
// level l ≥ 1 from the predecessor's path at the same level. Members of a
// batch appended together share most of their paths, so a member costs
// about 1.4 hashes instead of ⌈log2 count⌉ and no signature; at most
// maxNextChain "next" values follow each other, so reading one follows
// at most that many predecessors.
//
// A transaction is stored in a packed form only if rebuilding it gives
// exactly its bytes (storedEntryValue checks); otherwise it is stored
// plain. One canonical form stays one: the stored form is a function of
// the transaction's bytes and its predecessor's, so every validator
// stores the same, and unpacking is the encoder every client and verifier
// uses (verify.SignedEntry.Encode).
const (
	packedEntry      = 0x01
	packedBatchEntry = 0x02
	packedNextEntry  = 0x03

	maxNextChain = 16
	// sameSubmitter is the mask bit of a "next" value that takes the
	// submitter from the predecessor; bits 0–7 are the path's levels (a
	// path has at most 8 hashes).
	sameSubmitter = 1 << 8
)

// storedEntry is an entry as read from, or written to, the entries
// bucket.
type storedEntry struct {
	height int64
	tx     []byte
	// se is tx decoded; nil for a plain value not decoded yet.
	se *verify.SignedEntry
	// chain is how many "next" values were followed back to reach a value
	// that stands alone (0 for one that does).
	chain int
	// leaf is the entry's leaf in its batch's tree, once computed.
	leaf *[32]byte
}

// batchLeaf returns the entry's leaf in its batch's tree (its successor's
// candidate at level 0), computed once.
func (e *storedEntry) batchLeaf() [32]byte {
	if e.leaf == nil {
		l := verify.BatchLeaf(&e.decoded().Entry)
		e.leaf = &l
	}
	return *e.leaf
}

// decoded returns e.se, decoding a plain value's transaction on first
// need.
func (e *storedEntry) decoded() *verify.SignedEntry {
	if e.se == nil {
		e.se, _ = verify.DecodeEntry(e.tx)
	}
	return e.se
}

// storedEntryValue is the entries bucket's value for tx, committed at
// height; se is tx decoded, or nil to decode it here; prev is the entry
// before it in the log, or nil (then a batch member is stored as
// "batch"), needed only when se is batch-signed. It returns the value and
// the entry as stored, the next entry's prev.
func storedEntryValue(height int64, tx []byte, se *verify.SignedEntry, prev *storedEntry) ([]byte, storedEntry) {
	if se == nil {
		var err error
		if se, err = verify.DecodeEntry(tx); err != nil {
			return plainEntry(height, tx), storedEntry{height: height, tx: tx}
		}
	}
	out := storedEntry{height: height, tx: tx, se: se}
	if prev != nil && se.Batch != nil && prev.chain < maxNextChain-1 {
		if v, ok := packNext(height, se, prev); ok {
			if got, ok := decodeStoredEntry(v, func() (*storedEntry, bool) { return prev, true }); ok && bytes.Equal(got.tx, tx) {
				out.chain = prev.chain + 1
				return v, out
			}
		}
	}
	if v, ok := packEntry(height, se); ok {
		if got, ok := decodeStoredEntry(v, nil); ok && bytes.Equal(got.tx, tx) {
			return v, out
		}
	}
	return plainEntry(height, tx), out
}

func plainEntry(height int64, tx []byte) []byte {
	v := make([]byte, 8+len(tx))
	binary.BigEndian.PutUint64(v, uint64(height))
	copy(v[8:], tx)
	return v
}

const submitterPrefix = protocol.Ed25519KeyPrefix

// entryFields are an entry's fields in binary.
type entryFields struct {
	pub []byte
	at  time.Time
}

func binaryFields(se *verify.SignedEntry) (entryFields, bool) {
	e := &se.Entry
	key, ok := strings.CutPrefix(e.Submitter, submitterPrefix)
	if !ok || len(se.Signature) != ed25519.SignatureSize {
		return entryFields{}, false
	}
	pub, err := base64.StdEncoding.DecodeString(key)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return entryFields{}, false
	}
	at, err := time.Parse(verify.TimeLayout, e.Time)
	if err != nil {
		return entryFields{}, false
	}
	return entryFields{pub: pub, at: at}, true
}

// appendFields appends the fields, without the key and signature when
// asked.
func appendFields(v []byte, se *verify.SignedEntry, f entryFields, withKey, withSig bool) []byte {
	e := &se.Entry
	v = binary.AppendUvarint(v, uint64(len(e.Kind)))
	v = append(v, e.Kind...)
	v = binary.AppendUvarint(v, e.Nonce)
	if withKey {
		v = append(v, f.pub...)
	}
	v = binary.AppendVarint(v, f.at.UnixMilli())
	if withSig {
		v = append(v, se.Signature...)
	}
	return append(v, e.Body...)
}

func packEntry(height int64, se *verify.SignedEntry) ([]byte, bool) {
	f, ok := binaryFields(se)
	if !ok {
		return nil, false
	}
	e := &se.Entry
	v := make([]byte, 0, 24+len(e.Kind)+32+10+64+len(e.Body)+32*8)
	if b := se.Batch; b != nil {
		v = append(v, packedBatchEntry)
		v = binary.AppendUvarint(v, uint64(height))
		v = binary.AppendUvarint(v, uint64(b.Count))
		v = binary.AppendUvarint(v, uint64(b.Index))
		v = binary.AppendUvarint(v, uint64(len(b.Path)))
		for _, h := range b.Path {
			v = append(v, h[:]...)
		}
	} else {
		v = append(v, packedEntry)
		v = binary.AppendUvarint(v, uint64(height))
	}
	return appendFields(v, se, f, true, true), true
}

// nextCandidates are the hashes a "next" value may take from its
// predecessor pe (decoded, a batch member), by level.
func nextCandidates(pe *storedEntry, n int) [][32]byte {
	p := pe.decoded()
	c := make([][32]byte, n)
	if n > 0 {
		c[0] = pe.batchLeaf()
	}
	for l := 1; l < n && l < len(p.Batch.Path); l++ {
		c[l] = p.Batch.Path[l]
	}
	return c
}

func packNext(height int64, se *verify.SignedEntry, prev *storedEntry) ([]byte, bool) {
	p := prev.decoded()
	b := se.Batch
	if p == nil || p.Batch == nil || p.Batch.Count != b.Count || !bytes.Equal(p.Signature, se.Signature) || len(b.Path) > 8 {
		return nil, false
	}
	f, ok := binaryFields(se)
	if !ok {
		return nil, false
	}
	cand := nextCandidates(prev, len(b.Path))
	var mask uint64
	for l, h := range b.Path {
		if (l == 0 || l < len(p.Batch.Path)) && h == cand[l] {
			mask |= 1 << l
		}
	}
	sameKey := p.Entry.Submitter == se.Entry.Submitter
	if sameKey {
		mask |= sameSubmitter
	}
	e := &se.Entry
	v := make([]byte, 0, 24+len(e.Kind)+32+10+len(e.Body)+32*len(b.Path))
	v = append(v, packedNextEntry)
	v = binary.AppendUvarint(v, uint64(height))
	v = binary.AppendUvarint(v, uint64(b.Index))
	v = binary.AppendUvarint(v, uint64(len(b.Path)))
	v = binary.AppendUvarint(v, mask)
	for l, h := range b.Path {
		if mask&(1<<l) == 0 {
			v = append(v, h[:]...)
		}
	}
	return appendFields(v, se, f, !sameKey, false), true
}

// decodeStoredEntry reads an entries bucket value, in any form; prev
// gives the entry before it in the log, needed only by a "next" value
// (nil: such a value is unreadable).
func decodeStoredEntry(v []byte, prev func() (*storedEntry, bool)) (storedEntry, bool) {
	if len(v) == 0 {
		return storedEntry{}, false
	}
	if v[0] == 0 {
		if len(v) < 8 {
			return storedEntry{}, false
		}
		return storedEntry{height: int64(binary.BigEndian.Uint64(v)), tx: v[8:]}, true
	}
	form := v[0]
	p := v[1:]
	next := func() (uint64, bool) {
		n, k := binary.Uvarint(p)
		if k <= 0 {
			return 0, false
		}
		p = p[k:]
		return n, true
	}
	h, ok := next()
	if !ok {
		return storedEntry{}, false
	}
	se := &verify.SignedEntry{}
	chain := 0
	withKey, withSig := true, true
	switch form {
	case packedEntry:
	case packedBatchEntry:
		count, ok1 := next()
		index, ok2 := next()
		n, ok3 := next()
		if !ok1 || !ok2 || !ok3 || count > verify.MaxBatch || index >= count || n > 16 || uint64(len(p)) < 32*n {
			return storedEntry{}, false
		}
		se.Batch = &verify.Batch{Count: int(count), Index: int(index), Path: make([][32]byte, n)}
		for i := range se.Batch.Path {
			se.Batch.Path[i] = [32]byte(p[32*i:])
		}
		p = p[32*n:]
	case packedNextEntry:
		if prev == nil {
			return storedEntry{}, false
		}
		pe, ok := prev()
		if !ok || pe.chain >= maxNextChain-1 {
			return storedEntry{}, false
		}
		ps := pe.decoded()
		index, ok1 := next()
		n, ok2 := next()
		mask, ok3 := next()
		if !ok1 || !ok2 || !ok3 || ps == nil || ps.Batch == nil || index >= uint64(ps.Batch.Count) || n > 8 || mask >= 1<<9 {
			return storedEntry{}, false
		}
		se.Batch = &verify.Batch{Count: ps.Batch.Count, Index: int(index), Path: make([][32]byte, n)}
		var cand [][32]byte
		for l := range se.Batch.Path {
			if mask&(1<<l) != 0 {
				if cand == nil {
					cand = nextCandidates(pe, int(n))
				}
				if l >= 1 && l >= len(ps.Batch.Path) {
					return storedEntry{}, false
				}
				se.Batch.Path[l] = cand[l]
				continue
			}
			if len(p) < 32 {
				return storedEntry{}, false
			}
			se.Batch.Path[l] = [32]byte(p)
			p = p[32:]
		}
		se.Signature = ps.Signature
		withSig = false
		if mask&sameSubmitter != 0 {
			se.Entry.Submitter = ps.Entry.Submitter
			withKey = false
		}
		chain = pe.chain + 1
	default:
		return storedEntry{}, false
	}
	kl, ok := next()
	if !ok || uint64(len(p)) < kl {
		return storedEntry{}, false
	}
	se.Entry.Kind = verify.Kind(p[:kl])
	p = p[kl:]
	if se.Entry.Nonce, ok = next(); !ok {
		return storedEntry{}, false
	}
	if withKey {
		if len(p) < ed25519.PublicKeySize {
			return storedEntry{}, false
		}
		se.Entry.Submitter = submitterPrefix + base64.StdEncoding.EncodeToString(p[:ed25519.PublicKeySize])
		p = p[ed25519.PublicKeySize:]
	}
	ms, k := binary.Varint(p)
	if k <= 0 {
		return storedEntry{}, false
	}
	p = p[k:]
	se.Entry.Time = time.UnixMilli(ms).UTC().Format(verify.TimeLayout)
	if withSig {
		if len(p) < ed25519.SignatureSize {
			return storedEntry{}, false
		}
		se.Signature = p[:ed25519.SignatureSize]
		p = p[ed25519.SignatureSize:]
	}
	// A body is a JSON object: a value cut short is unreadable, never
	// another entry.
	if len(p) < 2 || p[0] != '{' || p[len(p)-1] != '}' {
		return storedEntry{}, false
	}
	se.Entry.Body = p
	return storedEntry{height: int64(h), tx: se.Encode(), se: se, chain: chain}, true
}

// loadStoredEntry reads entry i through get (the entries bucket's value
// at an index), following "next" values back to their predecessors.
func loadStoredEntry(get func(uint64) []byte, i uint64) (storedEntry, bool) {
	return loadStoredEntryDepth(get, i, 0)
}

func loadStoredEntryDepth(get func(uint64) []byte, i uint64, depth int) (storedEntry, bool) {
	return decodeStoredEntry(get(i), func() (*storedEntry, bool) {
		if i == 0 || depth >= maxNextChain {
			return nil, false
		}
		p, ok := loadStoredEntryDepth(get, i-1, depth+1)
		return &p, ok
	})
}
