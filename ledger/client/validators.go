package client

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// Following the validator set from genesis. A client pins a ledger's
// genesis (by its hash, handed over by an operator out of band, or on
// first use) and derives every later set itself from the changes the
// server serves, each checked under the set before it (verify.Follow).
// The server is trusted for nothing but availability: a set it made up
// has no chain of approvals from the genesis.

// ErrGenesis: the server's genesis is not the one pinned.
var ErrGenesis = errors.New("ledger genesis differs from the pinned one")

const maxGenesisJSON = 256 << 10 // ≤ verify.MaxValidators validators
const maxChangesJSON = 8 << 20   // a page of ≤ 64 changes; honest ones take a few KiB each

// Genesis fetches the ledger's genesis and checks its shape. The caller
// compares its Hash with the one it pinned.
func (c *Client) Genesis(ctx context.Context) (*verify.Genesis, error) {
	b, err := c.do(ctx, "GET", "/v1/genesis", nil, nil, maxGenesisJSON, false)
	if err != nil {
		return nil, err
	}
	var g verify.Genesis
	if err := decodeStrict(b, &g); err != nil {
		return nil, malformed("genesis: %v", err)
	}
	if err := g.Check(); err != nil {
		return nil, malformed("genesis: %v", err)
	}
	return &g, nil
}

// ValidatorChanges fetches decided changes from set version from on (a
// page; fewer than asked when the server pages) and the current version.
func (c *Client) ValidatorChanges(ctx context.Context, from uint64) (uint64, []verify.ValidatorChange, error) {
	q := url.Values{"from": {strconv.FormatUint(from, 10)}}
	b, err := c.do(ctx, "GET", "/v1/validators/changes", q, nil, maxChangesJSON, false)
	if err != nil {
		return 0, nil, err
	}
	var out struct {
		Version uint64                   `json:"version"`
		Changes []verify.ValidatorChange `json:"changes"`
	}
	if err := decodeStrict(b, &out); err != nil {
		return 0, nil, malformed("validator changes: %v", err)
	}
	for i, ch := range out.Changes {
		if ch.Version != from+uint64(i) {
			return 0, nil, malformed("validator changes: change %d of the page is version %d, want %d", i, ch.Version, from+uint64(i))
		}
	}
	return out.Version, out.Changes, nil
}

// Membership is a validator set followed from genesis.
type Membership struct {
	Genesis *verify.Genesis
	// Version is the number of changes followed; Set the set they made.
	Version uint64
	Set     *verify.ValidatorSet
	// Previous is the set before the last change (nil at version 0): the
	// set that signed checkpoints until the change took effect.
	Previous *verify.ValidatorSet
	// Changes are the changes followed in this call.
	Changes []verify.ValidatorChange
}

// Follow derives the current validator set: from m (a set already
// followed, or the genesis at version 0) through every change the server
// holds, each verified under the set before it. It returns the new
// membership; m is not modified. Errors wrapping verify.ErrMembership
// mean the server served a change that does not follow.
func (c *Client) Follow(ctx context.Context, m *Membership) (*Membership, error) {
	out := *m
	out.Changes = nil
	for {
		cur, page, err := c.ValidatorChanges(ctx, out.Version+1)
		if err != nil {
			return nil, err
		}
		for i := range page {
			next, err := out.Set.Follow(&page[i], out.Genesis.Threshold)
			if err != nil {
				return nil, err
			}
			out.Previous, out.Set, out.Version = out.Set, next, page[i].Version
			out.Changes = append(out.Changes, page[i])
		}
		if len(page) == 0 || out.Version >= cur {
			if out.Version < cur {
				return nil, malformed("validator changes: the server is at set version %d and served none after %d", cur, out.Version)
			}
			return &out, nil
		}
	}
}

// FollowGenesis fetches the genesis, checks it against genesisHash (if
// not empty) and follows every change from it.
func (c *Client) FollowGenesis(ctx context.Context, genesisHash string) (*Membership, error) {
	g, err := c.Genesis(ctx)
	if err != nil {
		return nil, err
	}
	if genesisHash != "" && g.Hash() != genesisHash {
		return nil, verr(ErrGenesis, "the server's genesis hashes to %s, not the pinned %s: another ledger", g.Hash(), genesisHash)
	}
	set, err := g.Set()
	if err != nil {
		return nil, malformed("genesis: %v", err)
	}
	return c.Follow(ctx, &Membership{Genesis: g, Set: set})
}

// openUnder opens a checkpoint under the current set, or under the set
// before the last change: checkpoints trail commits by a few blocks, so
// the newest one may be signed by the set a change just replaced.
func openUnder(note []byte, m *Membership) (*verify.Checkpoint, error) {
	cp, err := verify.OpenCheckpoint(note, m.Set)
	if err != nil && m.Previous != nil && errors.Is(err, verify.ErrQuorum) {
		if cp2, err2 := verify.OpenCheckpoint(note, m.Previous); err2 == nil {
			return cp2, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w (validator set version %d)", err, m.Version)
	}
	return cp, nil
}
