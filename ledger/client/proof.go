package client

import (
	"golang.org/x/mod/sumdb/tlog"
)

// VerifyInclusion checks that the leaf with hash leaf is entry index of the
// log described by the (already verified) checkpoint cp, using the
// RFC 6962 audit path p.
func VerifyInclusion(p *InclusionProof, cp *Checkpoint, index uint64, leaf [32]byte) error {
	if index >= cp.Size {
		return verr(ErrNotIncluded, "entry %d is not in the checkpointed log of size %d", index, cp.Size)
	}
	if p.Index != index || p.Size != cp.Size {
		return verr(ErrNotIncluded, "inclusion proof is for index %d in size %d, not index %d in size %d", p.Index, p.Size, index, cp.Size)
	}
	if p.LeafHash != leaf {
		return verr(ErrNotIncluded, "inclusion proof for entry %d is for leaf hash %s, but the entry hashes to %s", index, b64(p.LeafHash[:]), b64(leaf[:]))
	}
	proof := make(tlog.RecordProof, len(p.Hashes))
	for i, h := range p.Hashes {
		proof[i] = h
	}
	if err := tlog.CheckRecord(proof, int64(cp.Size), cp.Root, int64(index), leaf); err != nil {
		return verr(ErrNotIncluded, "inclusion proof for entry %d (leaf hash %s) does not verify against the checkpoint root %s at size %d: the entry is not in the log the validators signed",
			index, b64(leaf[:]), b64(cp.Root[:]), cp.Size)
	}
	return nil
}

// VerifyConsistency checks that the log of the (verified) checkpoint newer
// extends the log of the trusted checkpoint older. p is needed only when
// newer is strictly larger and older non-empty; it may be nil otherwise.
func VerifyConsistency(p *ConsistencyProof, older, newer *Checkpoint) error {
	switch {
	case newer.Size < older.Size:
		return verr(ErrRewound, "server shows an older/rewound log: its checkpoint has size %d, but a checkpoint of size %d was trusted before — the log cannot shrink",
			newer.Size, older.Size)
	case newer.Size == older.Size:
		if newer.Root != older.Root {
			return verr(ErrInconsistent, "checkpoint at size %d has root %s, but the trusted checkpoint at the same size has root %s: two different logs were signed — possible fork or rewrite",
				newer.Size, b64(newer.Root[:]), b64(older.Root[:]))
		}
		return nil
	case older.Size == 0:
		return nil // every log extends the empty one
	}
	if p == nil || p.From != older.Size || p.To != newer.Size {
		return verr(ErrInconsistent, "no consistency proof from size %d to %d", older.Size, newer.Size)
	}
	proof := make(tlog.TreeProof, len(p.Hashes))
	for i, h := range p.Hashes {
		proof[i] = h
	}
	if err := tlog.CheckTree(proof, int64(newer.Size), newer.Root, int64(older.Size), older.Root); err != nil {
		return verr(ErrInconsistent, "consistency proof from size %d to %d does not verify: the server's log is not an extension of the one trusted at size %d — possible fork or rewrite",
			older.Size, newer.Size, older.Size)
	}
	return nil
}
