package ledger

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
)

// The replay index: the ledger refuses a second entry with the same
// (submitter, nonce), and says which entry holds the pair. Stores made
// before decision 0173 key the nonces bucket by the pair itself (32 + 8
// bytes); stores made since key it by the first 16 bytes of the pair's
// SHA-256, name the holding entry by the uvarint of its index, and keep
// which keys have signed an entry in the submitters
// bucket (the key rotation rules ask; the old keys answered by prefix). A
// store has the hashed form exactly if it has the submitters bucket; it
// keeps its form for life, and a snapshot carries it (format 2). Both
// forms refuse exactly the same entries: telling two pairs apart by 128
// bits of SHA-256 fails only for a second preimage, and no rule reads the
// index otherwise.
var bucketSubmitters = []byte("submitters")

const nonceHashSize = 16

// hashedNonces says whether the store keys its replay index by hash.
func (r reader) hashedNonces() bool { return r.tx.Bucket(bucketSubmitters) != nil }

// nonceIndexKey is the nonces bucket's key for (pub, nonce).
func nonceIndexKey(hashed bool, pub ed25519.PublicKey, nonce uint64) []byte {
	k := append(bytes.Clone(pub), be64(nonce)...)
	if !hashed {
		return k
	}
	h := sha256.Sum256(k)
	return h[:nonceHashSize]
}

// nonceIndexValue is the nonces bucket's value naming entry index: 8
// bytes big-endian, or in the hashed form its uvarint.
func nonceIndexValue(hashed bool, index uint64) []byte {
	if !hashed {
		return be64(index)
	}
	return binary.AppendUvarint(nil, index)
}

// nonceHolder is the entry index a nonces bucket value names.
func nonceHolder(hashed bool, v []byte) uint64 {
	if !hashed {
		i, _ := getU64(v)
		return i
	}
	i, _ := binary.Uvarint(v)
	return i
}

// signedBefore says whether key signed an entry already, committed or in
// the block.
func (v blockView) signedBefore(key ed25519.PublicKey) bool {
	if v.r.hashedNonces() {
		return v.get(bucketSubmitters, key) != nil
	}
	return v.hasPrefix(bucketNonces, key)
}
