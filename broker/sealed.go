package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/policy"
	"github.com/cloisterhq/cloister/sealed"
)

// EntryLister reads the ledger's entries page by page (*client.Client).
type EntryLister interface {
	Entries(ctx context.Context, from uint64, limit int) (*client.Page, error)
}

// ErrNoGrant is returned when the ledger holds no live grant for the
// isolate on the artifact.
var ErrNoGrant = errors.New("no live grant")

// FindGrant reads the ledger for owner's artifact digest and the grant
// that lets the isolate (node and session, or an isolate of class) obtain
// its key: the latest one naming it that is not revoked (nor its
// delegation), else the latest one naming it. The ledger judges the grant
// — window by block time, revocation, uses — when a broker records the
// release; this only picks which to ask under.
func FindGrant(ctx context.Context, l EntryLister, owner, digest, node, session, class string) (*acl.Artifact, uint64, error) {
	var art *acl.Artifact
	type cand struct {
		index uint64
		deleg *uint64
	}
	var grants []cand
	revoked := map[uint64]bool{} // grant and delegation indexes
	for from := uint64(0); ; {
		page, err := l.Entries(ctx, from, 1000)
		if err != nil {
			return nil, 0, fmt.Errorf("reading the ledger: %w", err)
		}
		for _, e := range page.Entries {
			se := e.Signed.Entry
			switch string(se.Kind) {
			case acl.KindArtifactRegistered:
				if a, err := acl.DecodeArtifact(se.Body); err == nil && art == nil && a.Digest == digest && se.Submitter == owner {
					art = a
				}
			case acl.KindGranted:
				g, err := acl.DecodeGrant(se.Body)
				if err != nil || g.Artifact != digest || g.Owner != owner {
					continue
				}
				if g.Grantee.Specific() && (g.Grantee.Node != node || g.Grantee.Session != session) || !g.Grantee.Specific() && g.Grantee.Class != class {
					continue
				}
				grants = append(grants, cand{e.Index, g.Delegation})
			case acl.KindRevoked:
				if r, err := acl.DecodeRevocation(se.Body); err == nil {
					if r.Grant != nil {
						revoked[*r.Grant] = true
					} else if r.Delegation != nil {
						revoked[*r.Delegation] = true
					}
				}
			}
		}
		from += uint64(len(page.Entries))
		if len(page.Entries) == 0 || from >= page.Size {
			break
		}
	}
	if art == nil {
		return nil, 0, fmt.Errorf("the ledger holds no artifact %s registered by %s", digest, owner)
	}
	for i := len(grants) - 1; i >= 0; i-- {
		g := grants[i]
		if !revoked[g.index] && (g.deleg == nil || !revoked[*g.deleg]) {
			return art, g.index, nil
		}
	}
	if len(grants) > 0 {
		// Only revoked grants: the brokers ask the ledger, which refuses
		// with its reason; the node does not judge on its own.
		return art, grants[len(grants)-1].index, nil
	}
	return art, 0, fmt.Errorf("%w on artifact %s of %s for session %s of node %s (nor for class %s)", ErrNoGrant, digest, owner, session, node, class)
}

// ObtainSealed obtains the content key of a policy's sealed program for
// the isolate: it finds the artifact and a grant on the ledger, checks
// the artifact is the one the policy names (its brokers exactly the
// pinned keys, its threshold, its plaintext hash the program's sha256),
// and asks the brokers (Obtain), each at the URL pinned beside its key.
func ObtainSealed(ctx context.Context, l EntryLister, prog *policy.Program, iso *Isolate, class string) (*sealed.Key, []Released, uint64, error) {
	sp := prog.Sealed
	art, grant, err := FindGrant(ctx, l, sp.Owner, sp.Digest, iso.Node, iso.Session, class)
	if err != nil {
		return nil, nil, 0, err
	}
	if art.PlaintextSHA256 != prog.SHA256 {
		return nil, nil, grant, fmt.Errorf("artifact %s on the ledger is a program with sha256 %s, the policy pins %s", sp.Digest, art.PlaintextSHA256, prog.SHA256)
	}
	if art.Threshold != sp.Threshold {
		return nil, nil, grant, fmt.Errorf("artifact %s on the ledger needs %d shares, the policy says %d", sp.Digest, art.Threshold, sp.Threshold)
	}
	pinned := make([]string, 0, len(sp.Brokers))
	for _, b := range sp.Brokers {
		pinned = append(pinned, b.Key)
	}
	have := slices.Clone(art.Brokers)
	slices.Sort(have)
	slices.Sort(pinned)
	if !slices.Equal(have, pinned) {
		return nil, nil, grant, fmt.Errorf("artifact %s on the ledger is shared among brokers %v, the policy pins %v", sp.Digest, art.Brokers, pinned)
	}
	urls := make([]string, len(art.Brokers))
	for i, k := range art.Brokers {
		urls[i], _ = sp.BrokerURL(k)
	}
	key, rel, err := Obtain(ctx, sp.Owner, art, grant, urls, iso)
	return key, rel, grant, err
}
