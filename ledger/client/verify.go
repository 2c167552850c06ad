package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// VerifyResult says what Verify established.
type VerifyResult struct {
	Origin    string
	StatePath string
	// FirstUse is set when no state existed: the validator set was pinned
	// now, on trust.
	FirstUse bool
	// Previous is the checkpoint trusted before this run (nil on first
	// use); Checkpoint the one verified now and saved.
	Previous   *verify.Checkpoint
	Checkpoint *verify.Checkpoint
	// Entry is the entry asked for, verified: included in Checkpoint and
	// signed by its submitter.
	Entry *Entry
}

// Verify checks the ledger against what was trusted before and records
// what it now trusts, in the state file at statePath ("" means
// DefaultStatePath of the server's origin):
//
//  1. fetch the validator set; on first use (no state file) pin it,
//     otherwise it must equal the pinned set;
//  2. fetch the latest checkpoint; its origin must be the ledger's and
//     validators holding more than 2/3 of the power must have signed it;
//  3. if a checkpoint was trusted before: a smaller size is a rewound log,
//     the same size must have the same root, a larger size needs a
//     consistency proof from the old size to the new;
//  4. with index: fetch the entry and its inclusion proof in the new
//     checkpoint, check that the entry's own leaf hash is included, that
//     the entry is canonical and that its submitter signature verifies;
//  5. save the state (atomically, mode 0600).
//
// The state is written only if every step passed. Errors from the checks
// are *VerificationError (errors.Is against verify.ErrQuorum, verify.ErrRewound,
// verify.ErrInconsistent, verify.ErrNotIncluded, …); a bad state file is *StateError;
// anything else is a transport or server error.
func (c *Client) Verify(ctx context.Context, statePath string, index *uint64) (*VerifyResult, error) {
	vs, err := c.Validators(ctx)
	if err != nil {
		return nil, err
	}
	if statePath == "" {
		if statePath, err = DefaultStatePath(vs.Origin); err != nil {
			return nil, err
		}
	}
	res := &VerifyResult{Origin: vs.Origin, StatePath: statePath}
	st, err := LoadState(statePath)
	if err != nil {
		return nil, err
	}
	pinned := vs
	if st == nil {
		res.FirstUse = true
	} else {
		if st.Origin != vs.Origin {
			return nil, verr(verify.ErrOrigin, "server is ledger %q, but state file %s trusts ledger %q (use another --state for another ledger)",
				vs.Origin, statePath, st.Origin)
		}
		if !st.Validators.Equal(vs) {
			return nil, verr(verify.ErrValidatorSetChanged, "the server's validator set differs from the one pinned in %s (%s); the set is fixed at genesis, so this is another ledger or a compromised server — move the state file away only if you know the new set is right",
				statePath, st.Validators.Diff(vs))
		}
		pinned = st.Validators
		if res.Previous, err = st.TrustedCheckpoint(); err != nil {
			return nil, &StateError{Path: statePath, Err: err}
		}
	}

	raw, err := c.Checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	cp, err := verify.OpenCheckpoint(raw.Note, pinned)
	if err != nil {
		return nil, err
	}
	res.Checkpoint = cp

	if old := res.Previous; old != nil {
		var proof *verify.ConsistencyProof
		if cp.Size > old.Size && old.Size > 0 {
			if proof, err = c.ConsistencyProof(ctx, old.Size, cp.Size); err != nil {
				return nil, fmt.Errorf("fetching the consistency proof from size %d to %d: %w", old.Size, cp.Size, err)
			}
		}
		if err := verify.CheckConsistency(proof, old, cp); err != nil {
			return nil, err
		}
	}

	if index != nil {
		if res.Entry, err = c.verifyEntry(ctx, cp, *index); err != nil {
			return nil, err
		}
	}

	if res.FirstUse || res.Previous.Size != cp.Size {
		st := &State{Version: stateVersion, Origin: pinned.Origin, Validators: pinned, Checkpoint: string(cp.Note)}
		if err := st.Save(statePath); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (c *Client) verifyEntry(ctx context.Context, cp *verify.Checkpoint, index uint64) (*Entry, error) {
	if index >= cp.Size {
		return nil, verr(verify.ErrNotIncluded, "entry %d is not covered by the latest checkpoint (size %d); checkpoints trail commits by a few blocks — try again shortly", index, cp.Size)
	}
	e, err := c.Get(ctx, index)
	if err != nil {
		return nil, fmt.Errorf("fetching entry %d: %w", index, err)
	}
	proof, err := c.InclusionProof(ctx, index, cp.Size)
	if err != nil {
		return nil, fmt.Errorf("fetching the inclusion proof of entry %d in size %d: %w", index, cp.Size, err)
	}
	// The leaf hash is computed here from the bytes received, never taken
	// from the server.
	if err := verify.CheckInclusion(proof, cp, index, verify.LeafHash(e.Tx)); err != nil {
		return nil, err
	}
	if err := e.Signed.VerifySignature(); err != nil {
		if errors.Is(err, verify.ErrBadSignature) {
			return nil, verr(verify.ErrEntrySignature, "entry %d is in the log, but its signature does not verify under its submitter key %s", index, e.Signed.Entry.Submitter)
		}
		return nil, verr(verify.ErrEntrySignature, "entry %d: %v", index, err)
	}
	return e, nil
}
