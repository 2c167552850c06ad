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

// How the entries bucket stores a transaction (decision 0173). The log,
// its proofs, the API and snapshots know only the transaction's bytes,
// the one canonical JSON form the submitter signed; the store keeps a
// shorter form of the same bytes and gives them back exactly:
//
//	plain   be64(height) ‖ tx                       (every store before 0173; height < 2^56, so the first byte is 0)
//	packed  0x01 ‖ uvarint(height) ‖ uvarint(len(kind)) ‖ kind ‖ uvarint(nonce)
//	        ‖ submitter key (32) ‖ varint(time, Unix ms) ‖ signature (64) ‖ body
//	batch   0x02 ‖ uvarint(height) ‖ uvarint(count) ‖ uvarint(index) ‖ uvarint(len(path))
//	        ‖ path (32 each) ‖ the packed form's fields after the height
//	        (a batch-signed entry, rule version 18, decision 0175)
//
// The packed form drops what the canonical form spells the same way for
// every entry (member names, quotes, the "ed25519:" prefix) and the base64
// and decimal spellings of the key, the signature and the time. A
// transaction is packed only if rebuilding it from the packed fields gives
// exactly its bytes (packEntry checks); otherwise it is stored plain. One
// canonical form stays one: the packed form is a function of the
// transaction's bytes, so every validator stores the same, and unpacking
// is the encoder every client and verifier uses (verify.SignedEntry.Encode).
const (
	packedEntry      = 0x01
	packedBatchEntry = 0x02
)

// storedEntryValue is the entries bucket's value for tx, committed at
// height; se is tx decoded, or nil to decode it here.
func storedEntryValue(height int64, tx []byte, se *verify.SignedEntry) []byte {
	if se == nil {
		var err error
		if se, err = verify.DecodeEntry(tx); err != nil {
			return plainEntry(height, tx)
		}
	}
	if v, ok := packEntry(height, se); ok {
		if got, _ := unpackEntry(v); bytes.Equal(got, tx) {
			return v
		}
	}
	return plainEntry(height, tx)
}

func plainEntry(height int64, tx []byte) []byte {
	v := make([]byte, 8+len(tx))
	binary.BigEndian.PutUint64(v, uint64(height))
	copy(v[8:], tx)
	return v
}

const submitterPrefix = protocol.Ed25519KeyPrefix

func packEntry(height int64, se *verify.SignedEntry) ([]byte, bool) {
	e := &se.Entry
	key, ok := strings.CutPrefix(e.Submitter, submitterPrefix)
	if !ok || len(se.Signature) != ed25519.SignatureSize {
		return nil, false
	}
	pub, err := base64.StdEncoding.DecodeString(key)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, false
	}
	at, err := time.Parse(verify.TimeLayout, e.Time)
	if err != nil {
		return nil, false
	}
	v := make([]byte, 0, 24+len(e.Kind)+32+10+64+len(e.Body))
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
	v = binary.AppendUvarint(v, uint64(len(e.Kind)))
	v = append(v, e.Kind...)
	v = binary.AppendUvarint(v, e.Nonce)
	v = append(v, pub...)
	v = binary.AppendVarint(v, at.UnixMilli())
	v = append(v, se.Signature...)
	return append(v, e.Body...), true
}

// unpackEntry returns the height and the transaction of a packed value.
func unpackEntry(v []byte) (tx []byte, height int64) {
	if len(v) == 0 || v[0] != packedEntry && v[0] != packedBatchEntry {
		return nil, 0
	}
	p := v[1:]
	next := func() (uint64, bool) {
		n, k := binary.Uvarint(p)
		if k <= 0 {
			return 0, false
		}
		p = p[k:]
		return n, true
	}
	h, ok1 := next()
	var batch *verify.Batch
	if v[0] == packedBatchEntry {
		count, ok3 := next()
		index, ok4 := next()
		n, ok5 := next()
		if !ok3 || !ok4 || !ok5 || count > verify.MaxBatch || index >= count || n > 16 || uint64(len(p)) < 32*n {
			return nil, 0
		}
		batch = &verify.Batch{Count: int(count), Index: int(index), Path: make([][32]byte, n)}
		for i := range batch.Path {
			batch.Path[i] = [32]byte(p[32*i:])
		}
		p = p[32*n:]
	}
	kl, ok2 := next()
	if !ok1 || !ok2 || uint64(len(p)) < kl {
		return nil, 0
	}
	kind := p[:kl]
	p = p[kl:]
	nonce, ok := next()
	if !ok || len(p) < ed25519.PublicKeySize {
		return nil, 0
	}
	pub := p[:ed25519.PublicKeySize]
	p = p[ed25519.PublicKeySize:]
	ms, k := binary.Varint(p)
	if k <= 0 || len(p[k:]) < ed25519.SignatureSize {
		return nil, 0
	}
	p = p[k:]
	se := verify.SignedEntry{
		Entry: verify.Entry{
			Kind:      verify.Kind(kind),
			Body:      p[ed25519.SignatureSize:],
			Submitter: submitterPrefix + base64.StdEncoding.EncodeToString(pub),
			Nonce:     nonce,
			Time:      time.UnixMilli(ms).UTC().Format(verify.TimeLayout),
		},
		Signature: p[:ed25519.SignatureSize],
		Batch:     batch,
	}
	return se.Encode(), int64(h)
}

// decodeStoredEntry returns the height and transaction of an entries
// bucket value, in either form.
func decodeStoredEntry(v []byte) (height int64, tx []byte, ok bool) {
	if len(v) > 0 && (v[0] == packedEntry || v[0] == packedBatchEntry) {
		tx, height = unpackEntry(v)
		return height, tx, tx != nil
	}
	if len(v) < 8 {
		return 0, nil, false
	}
	return int64(binary.BigEndian.Uint64(v)), v[8:], true
}
