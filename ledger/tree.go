package ledger

import (
	"crypto/sha256"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

// The log is an RFC 6962 Merkle tree over the entry transactions, kept in
// the tlog "stored hashes" layout: appending record n stores the leaf hash
// and the roots of the complete subtrees it closes, so any root, inclusion
// proof or consistency proof is a handful of reads.

// emptyRoot is the root of the empty log, SHA-256 of the empty string.
var emptyRoot = tlog.Hash(sha256.Sum256(nil))

// appendLeaf adds the entry whose leaf hash is leaf as record n: the
// hashes of the subtrees it closes go into the batch. The leaf hash itself
// is only remembered for the block (batch.leaves): the store reads it from
// the entry (decision 0173).
func appendLeaf(v blockView, n uint64, leaf tlog.Hash) error {
	hs, err := tlog.StoredHashesForRecordHash(int64(n), leaf, v.hashes())
	if err != nil {
		return fmt.Errorf("ledger tree: append %d: %w", n, err)
	}
	v.batch.leaves[n] = leaf
	base := uint64(tlog.StoredHashIndex(0, int64(n)))
	for i, h := range hs[1:] {
		v.batch.put(bucketHashes, be64(base+1+uint64(i)), h[:])
	}
	return nil
}

// treeRoot is the root of the first n records.
func treeRoot(n uint64, r tlog.HashReader) (tlog.Hash, error) {
	if n == 0 {
		return emptyRoot, nil
	}
	return tlog.TreeHash(int64(n), r)
}
