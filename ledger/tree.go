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

// appendLeaf adds tx as record n: its stored hashes go into the batch.
func appendLeaf(v blockView, n uint64, tx []byte) error {
	hs, err := tlog.StoredHashes(int64(n), tx, v.hashes())
	if err != nil {
		return fmt.Errorf("ledger tree: append %d: %w", n, err)
	}
	base := uint64(tlog.StoredHashIndex(0, int64(n)))
	for i, h := range hs {
		v.batch.put(bucketHashes, be64(base+uint64(i)), h[:])
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
