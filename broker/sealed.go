package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

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

// Grants finds, for one node, the artifacts and grants its sealed runs
// need on a ledger. The ledger is append-only, so Grants folds its
// entries once, as it reads them, and each lookup reads only the entries
// appended since the previous one (the first reads the whole log). It
// keeps every artifact's registration, the grants a lookup can pick —
// those to an isolate class, and those to a session of this node — and
// the indexes of revoked grants and delegations.
type Grants struct {
	l    EntryLister
	node string

	mu      sync.Mutex
	next    uint64                   // entries before next are folded
	arts    map[string]*acl.Artifact // artifactKey → its first registration by its owner
	grants  map[string][]grantRef    // artifactKey → grants, in ledger order
	revoked map[uint64]bool          // grant and delegation indexes
}

type grantRef struct {
	index   uint64
	deleg   *uint64
	session string // "" for a class grant
	class   string
}

func artifactKey(owner, digest string) string { return owner + "\x00" + digest }

// NewGrants reads l for the grants of node (its platform key).
func NewGrants(l EntryLister, node string) *Grants {
	return &Grants{l: l, node: node, arts: map[string]*acl.Artifact{}, grants: map[string][]grantRef{}, revoked: map[uint64]bool{}}
}

// catchUp folds the entries appended since the last call. Callers hold
// g.mu.
func (g *Grants) catchUp(ctx context.Context) error {
	for {
		page, err := g.l.Entries(ctx, g.next, 1000)
		if err != nil {
			return fmt.Errorf("reading the ledger: %w", err)
		}
		for _, e := range page.Entries {
			if e.Index != g.next {
				return fmt.Errorf("reading the ledger: entry %d where %d was expected", e.Index, g.next)
			}
			g.fold(e)
			g.next++
		}
		if len(page.Entries) == 0 || g.next >= page.Size {
			return nil
		}
	}
}

func (g *Grants) fold(e *client.Entry) {
	se := e.Signed.Entry
	switch string(se.Kind) {
	case acl.KindArtifactRegistered:
		if a, err := acl.DecodeArtifact(se.Body); err == nil {
			if k := artifactKey(se.Submitter, a.Digest); g.arts[k] == nil {
				g.arts[k] = a
			}
		}
	case acl.KindGranted:
		gr, err := acl.DecodeGrant(se.Body)
		if err != nil || gr.Grantee.Specific() && gr.Grantee.Node != g.node {
			return
		}
		ref := grantRef{index: e.Index, deleg: gr.Delegation, class: gr.Grantee.Class}
		if gr.Grantee.Specific() {
			ref.session, ref.class = gr.Grantee.Session, ""
		}
		k := artifactKey(gr.Owner, gr.Artifact)
		g.grants[k] = append(g.grants[k], ref)
	case acl.KindRevoked:
		if r, err := acl.DecodeRevocation(se.Body); err == nil {
			if r.Grant != nil {
				g.revoked[*r.Grant] = true
			} else if r.Delegation != nil {
				g.revoked[*r.Delegation] = true
			}
		}
	}
}

// Find reads the ledger for owner's artifact digest and the grant that
// lets the node's isolate (session, or an isolate of class) obtain its
// key: the latest one naming it that is not revoked (nor its delegation),
// else the latest one naming it. The ledger judges the grant — window by
// block time, revocation, uses — when a broker records the release; this
// only picks which to ask under.
func (g *Grants) Find(ctx context.Context, owner, digest, session, class string) (*acl.Artifact, uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.catchUp(ctx); err != nil {
		return nil, 0, err
	}
	k := artifactKey(owner, digest)
	art := g.arts[k]
	if art == nil {
		return nil, 0, fmt.Errorf("the ledger holds no artifact %s registered by %s", digest, owner)
	}
	var last *grantRef
	refs := g.grants[k]
	for i := len(refs) - 1; i >= 0; i-- {
		r := &refs[i]
		if r.session != "" && r.session != session || r.session == "" && r.class != class {
			continue
		}
		if !g.revoked[r.index] && (r.deleg == nil || !g.revoked[*r.deleg]) {
			return art, r.index, nil
		}
		if last == nil {
			last = r
		}
	}
	if last != nil {
		// Only revoked grants: the brokers ask the ledger, which refuses
		// with its reason; the node does not judge on its own.
		return art, last.index, nil
	}
	return art, 0, fmt.Errorf("%w on artifact %s of %s for session %s of node %s (nor for class %s)", ErrNoGrant, digest, owner, session, g.node, class)
}

// grantGrace is how long a node waits for a grant it does not see yet,
// polling the ledger every grantPoll. A dispatcher records the assignment
// (which names the session) and then the grant for that session, one
// block later; a consumer quick enough to attest and upload within that
// block reaches the run first. Waiting a little is what a user expects;
// a grant that never comes is still refused, named, after the grace.
var grantGrace = 5 * time.Second

const grantPoll = 200 * time.Millisecond

// findGrant is grants.Find, waiting up to grantGrace (and ctx) while the
// ledger holds no live grant.
func findGrant(ctx context.Context, grants *Grants, owner, digest, session, class string) (*acl.Artifact, uint64, error) {
	until := time.Now().Add(grantGrace)
	for {
		art, grant, err := grants.Find(ctx, owner, digest, session, class)
		if !errors.Is(err, ErrNoGrant) || !time.Now().Before(until) {
			return art, grant, err
		}
		select {
		case <-ctx.Done():
			return art, grant, err
		case <-time.After(grantPoll):
		}
	}
}

// ObtainSealed obtains the content key of a policy's sealed program for
// the isolate: it finds the artifact and a grant on the ledger, checks
// the artifact is the one the policy names (its brokers exactly the
// pinned keys, its threshold, its plaintext hash the program's sha256),
// and asks the brokers (Obtain), each at the URL pinned beside its key.
// grants must be those of the isolate's node.
func ObtainSealed(ctx context.Context, grants *Grants, prog *policy.Program, iso *Isolate, class string) (*sealed.Key, []Released, uint64, error) {
	sp := prog.Sealed
	if iso.Node != grants.node {
		return nil, nil, 0, fmt.Errorf("grants read for node %s, the isolate is on node %s", grants.node, iso.Node)
	}
	art, grant, err := findGrant(ctx, grants, sp.Owner, sp.Digest, iso.Session, class)
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
