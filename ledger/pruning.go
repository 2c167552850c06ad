package ledger

// Block pruning. The Merkle log in the store is the record; CometBFT's
// blocks are how entries got there. Once a cosigned checkpoint covers a
// block's entries, the block is needed only by peers catching up through
// it and by evidence of misbehaviour at its height; a validator started
// with RetainBlocks keeps the last RetainBlocks blocks and lets CometBFT
// prune the rest (its pruner runs every 10 s; the databases compact the
// space away later). Entries, proofs and checkpoints are served from the
// store, so clients see no difference.
//
// The retain height is never above the first block holding an entry no
// stored checkpoint covers: a checkpoint of size S covers the log after
// the block that holds entry S-1 (checkpoints are of the log at block
// boundaries), so every block up to that one may go.

// retainHeight is the Commit answer after committing st: the lowest
// height CometBFT must keep, or 0 to leave its retain height as it is.
func (a *app) retainHeight(st committedState) int64 {
	if a.retainBlocks <= 0 || !st.HasCheckpoint || st.CheckpointSize == 0 {
		return 0
	}
	var covered int64
	if err := a.store.view(func(r reader) error {
		covered, _, _ = r.entry(st.CheckpointSize - 1)
		return nil
	}); err != nil || covered <= 0 {
		return 0
	}
	h := min(st.Height-a.retainBlocks, covered+1)
	if f, ok := a.snaps.floor(st.Height); ok {
		// Keep the blocks from the oldest kept snapshot on: a node
		// restoring it follows them from there (snapshot.go).
		h = min(h, f)
	}
	if h <= a.retained {
		return 0
	}
	a.retained = h
	return h
}
