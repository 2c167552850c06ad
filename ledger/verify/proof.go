package verify

import "golang.org/x/mod/sumdb/tlog"

// InclusionProof proves that the leaf at Index is in the log of Size
// leaves: the RFC 6962 audit path, leaf to root.
type InclusionProof struct {
	Index, Size uint64
	LeafHash    [32]byte
	Hashes      [][32]byte
}

// ConsistencyProof proves that the log of From leaves is a prefix of the
// log of To leaves.
type ConsistencyProof struct {
	From, To uint64
	Hashes   [][32]byte
}

// CheckInclusion checks that the leaf with hash leaf is entry index of the
// log the (already opened) checkpoint cp describes, by the audit path p.
// Compute leaf from the entry's bytes (LeafHash), never take it from a
// server.
func CheckInclusion(p *InclusionProof, cp *Checkpoint, index uint64, leaf [32]byte) error {
	if index >= cp.Size {
		return Errorf(ErrNotIncluded, "entry %d is not in the checkpointed log of size %d", index, cp.Size)
	}
	if p.Index != index || p.Size != cp.Size {
		return Errorf(ErrNotIncluded, "inclusion proof is for index %d in size %d, not index %d in size %d", p.Index, p.Size, index, cp.Size)
	}
	if p.LeafHash != leaf {
		return Errorf(ErrNotIncluded, "inclusion proof for entry %d is for leaf hash %s, but the entry hashes to %s", index, b64(p.LeafHash[:]), b64(leaf[:]))
	}
	proof := make(tlog.RecordProof, len(p.Hashes))
	for i, h := range p.Hashes {
		proof[i] = h
	}
	if err := tlog.CheckRecord(proof, int64(cp.Size), cp.Root, int64(index), leaf); err != nil {
		return Errorf(ErrNotIncluded, "inclusion proof for entry %d (leaf hash %s) does not verify against the checkpoint root %s at size %d: the entry is not in the log the validators signed",
			index, b64(leaf[:]), b64(cp.Root[:]), cp.Size)
	}
	return nil
}

// CheckConsistency checks that the log of the (opened) checkpoint newer
// extends the log of the trusted checkpoint older. p is needed only when
// newer is strictly larger and older non-empty; it may be nil otherwise.
func CheckConsistency(p *ConsistencyProof, older, newer *Checkpoint) error {
	switch {
	case newer.Size < older.Size:
		return Errorf(ErrRewound, "server shows an older/rewound log: its checkpoint has size %d, but a checkpoint of size %d was trusted before — the log cannot shrink",
			newer.Size, older.Size)
	case newer.Size == older.Size:
		if newer.Root != older.Root {
			return Errorf(ErrInconsistent, "checkpoint at size %d has root %s, but the trusted checkpoint at the same size has root %s: two different logs were signed — possible fork or rewrite",
				newer.Size, b64(newer.Root[:]), b64(older.Root[:]))
		}
		return nil
	case older.Size == 0:
		return nil // every log extends the empty one
	}
	if p == nil || p.From != older.Size || p.To != newer.Size {
		return Errorf(ErrInconsistent, "no consistency proof from size %d to %d", older.Size, newer.Size)
	}
	proof := make(tlog.TreeProof, len(p.Hashes))
	for i, h := range p.Hashes {
		proof[i] = h
	}
	if err := tlog.CheckTree(proof, int64(newer.Size), newer.Root, int64(older.Size), older.Root); err != nil {
		return Errorf(ErrInconsistent, "consistency proof from size %d to %d does not verify: the server's log is not an extension of the one trusted at size %d — possible fork or rewrite",
			older.Size, newer.Size, older.Size)
	}
	return nil
}
