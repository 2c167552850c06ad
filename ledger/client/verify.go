package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// VerifyResult says what Verify established.
type VerifyResult struct {
	Origin    string
	StatePath string
	// FirstUse is set when no state existed and no genesis hash was
	// given: the genesis was pinned now, on trust.
	FirstUse bool
	// Previous is the checkpoint trusted before this run (nil on first
	// use); Checkpoint the one verified now and saved.
	Previous   *verify.Checkpoint
	Checkpoint *verify.Checkpoint
	// SetVersion is the validator set version followed to; SetChanges
	// how many changes this run followed.
	SetVersion uint64
	SetChanges int
	// Witness names the witness that cosigned (or vouched for) the
	// checkpoint, when one is required (WithWitness).
	Witness string
	// Entry is the entry asked for, verified: included in Checkpoint and
	// signed by its submitter.
	Entry *Entry
}

// Verify checks the ledger against what was trusted before and records
// what it now trusts, in the state file at statePath ("" means
// DefaultStatePath of the server's origin):
//
//  1. fetch the genesis; on first use (no state file) pin it — if the
//     client was made WithGenesis, only if it has that hash, otherwise on
//     trust —, later it must be the pinned one;
//  2. follow the validator-set changes from the set trusted so far (the
//     genesis set on first use), each verified under the set before it;
//     the server's current set must be the one followed (or the one
//     before the last change, until the change takes effect);
//  3. fetch the latest checkpoint; its origin must be the ledger's and
//     validators holding more than 2/3 of the followed set's power (or
//     of the set before the last change) must have signed it;
//  4. if a checkpoint was trusted before: a smaller size is a rewound log,
//     the same size must have the same root, a larger size needs a
//     consistency proof from the old size to the new;
//  5. with index: fetch the entry and its inclusion proof in the new
//     checkpoint, check that the entry's own leaf hash is included, that
//     the entry is canonical and that its submitter signature verifies;
//  6. save the state (atomically, mode 0600).
//
// The state is written only if every step passed. Errors from the checks
// are *VerificationError (errors.Is against verify.ErrQuorum, verify.ErrRewound,
// verify.ErrInconsistent, verify.ErrNotIncluded, verify.ErrMembership,
// ErrGenesis, …); a bad state file is *StateError; anything else is a
// transport or server error.
func (c *Client) Verify(ctx context.Context, statePath string, index *uint64) (*VerifyResult, error) {
	g, err := c.Genesis(ctx)
	if err != nil {
		return nil, err
	}
	origin := verify.Origin(g.ChainID)
	if statePath == "" {
		if statePath, err = DefaultStatePath(origin); err != nil {
			return nil, err
		}
	}
	res := &VerifyResult{Origin: origin, StatePath: statePath}
	st, err := LoadState(statePath)
	if err != nil {
		return nil, err
	}
	var m *Membership
	switch {
	case st == nil:
		if c.genesis != "" && g.Hash() != c.genesis {
			return nil, verr(ErrGenesis, "the server's genesis hashes to %s, not the pinned %s: another ledger", g.Hash(), c.genesis)
		}
		res.FirstUse = c.genesis == ""
		set, err := g.Set()
		if err != nil {
			return nil, malformed("genesis: %v", err)
		}
		m = &Membership{Genesis: g, Set: set}
	case st.Origin != origin:
		return nil, verr(verify.ErrOrigin, "server is ledger %q, but state file %s trusts ledger %q (use another --state for another ledger)",
			origin, statePath, st.Origin)
	case st.Genesis == nil:
		// A set pinned before sets could change: the server's genesis
		// must be that set; from there, follow.
		set, err := g.Set()
		if err != nil {
			return nil, malformed("genesis: %v", err)
		}
		if !st.Validators.Equal(set) {
			return nil, verr(verify.ErrValidatorSetChanged, "the server's genesis validator set differs from the one pinned in %s (%s); this is another ledger or a compromised server — move the state file away only if you know the new set is right",
				statePath, st.Validators.Diff(set))
		}
		m = &Membership{Genesis: g, Set: st.Validators}
	default:
		if st.Genesis.Hash() != g.Hash() {
			return nil, verr(ErrGenesis, "the server's genesis differs from the one pinned in %s (%s); this is another ledger or a compromised server — move the state file away only if you know the new genesis is right",
				statePath, genesisDiff(st.Genesis, g))
		}
		m = st.membership()
	}
	if c.genesis != "" && m.Genesis.Hash() != c.genesis {
		return nil, verr(ErrGenesis, "state file %s pins genesis %s, not %s", statePath, m.Genesis.Hash(), c.genesis)
	}
	if st != nil {
		if res.Previous, err = st.TrustedCheckpoint(); err != nil {
			return nil, &StateError{Path: statePath, Err: err}
		}
	}
	if m, err = c.Follow(ctx, m); err != nil {
		return nil, err
	}
	res.SetVersion, res.SetChanges = m.Version, len(m.Changes)
	vs, err := c.Validators(ctx)
	if err != nil {
		return nil, err
	}
	if !vs.Equal(m.Set) && (m.Previous == nil || !vs.Equal(m.Previous)) {
		return nil, verr(verify.ErrValidatorSetChanged, "the server's validator set differs from the one pinned in %s and followed from its genesis (%s); the set changes only by approved changes, so this is another ledger or a compromised server",
			statePath, m.Set.Diff(vs))
	}

	raw, err := c.Checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	cp, err := openUnder(raw.Note, m)
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

	if c.witness != nil {
		note, err := c.witnessCosign(ctx, cp, m)
		if err != nil {
			return nil, err
		}
		cp.Note, res.Witness = note, c.witness.id.Name
	}

	if index != nil {
		if res.Entry, err = c.verifyEntry(ctx, cp, *index); err != nil {
			return nil, err
		}
	}

	if st == nil || st.Genesis == nil || res.Previous.Size != cp.Size || st.SetVersion != m.Version {
		st := &State{Version: stateVersion, Origin: origin, Genesis: m.Genesis, SetVersion: m.Version,
			Validators: m.Set, PreviousSet: m.Previous, Checkpoint: string(cp.Note)}
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

// genesisDiff says how genesis b differs from a, for error messages.
func genesisDiff(a, b *verify.Genesis) string {
	var parts []string
	if sa, err := a.Set(); err == nil {
		if sb, err := b.Set(); err == nil && !sa.Equal(sb) {
			parts = append(parts, "validators: "+sa.Diff(sb))
		}
	}
	if a.Time != b.Time && len(parts) == 0 {
		parts = append(parts, fmt.Sprintf("genesis time %s instead of %s", b.Time, a.Time))
	}
	if a.Threshold != b.Threshold {
		parts = append(parts, fmt.Sprintf("threshold %s instead of %s", b.Threshold, a.Threshold))
	}
	return strings.Join(parts, "; ")
}
