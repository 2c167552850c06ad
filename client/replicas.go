package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/software"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/policy"
)

// Replicated sessions (docs/piee.md, "Replicated sessions"): a policy
// with "replicas": N runs as N sessions on nodes of N distinct
// organisations, one replica set on the ledger. The principals' client
// does the fan-out — it creates the N sessions, attests each, seals every
// upload to each — and, before it takes a result, checks on the ledger
// itself (checkpoint signatures, inclusion proofs) that the N attested
// replicas committed the same result digest.

// Errors of replicated sessions, for errors.Is.
var (
	// ErrReplicasPending: not every replica has committed its result yet.
	ErrReplicasPending = errors.New("the replicas have not all committed their results")
	// ErrReplicas: the replica set does not meet the policy (too few
	// organisations, two replicas of one organisation or class, a result
	// not signed by the attested session key).
	ErrReplicas = errors.New("replica set refused")
	// ErrReplicasDisagree: the replicas committed different results.
	ErrReplicasDisagree = lclient.ErrReplicasDisagree
)

// Replicas is a replica set as a principal reaches it.
type Replicas struct {
	Set     string
	Members []lclient.ReplicaMember
	pol     *policy.Policy
	ledger  *lclient.Client
	clients []*Client
}

// LedgerOf returns a client of the ledger node c records to (its
// GetNodeInfo). What that ledger serves is checked, not trusted: against
// the genesis pinned in the ledger state file, by checkpoint signatures
// and inclusion proofs.
func LedgerOf(ctx context.Context, c *Client) (*lclient.Client, error) {
	info, err := c.NodeInfo(ctx)
	if err != nil {
		return nil, err
	}
	if info.LedgerUrl == "" {
		return nil, fmt.Errorf("%w: node %s records to no ledger reachable by URL; replicated sessions agree on a shared ledger", ErrReplicas, c.base)
	}
	return lclient.New(info.LedgerUrl)
}

// candidate is a node a replica set may take.
type candidate struct {
	node, org, class, endpoint string
}

// candidates lists the nodes with a live offer whose class the policy
// accepts (for software, whose platform key it lists), by organisation.
func candidates(offers *lclient.OfferList, pol *policy.Policy) []candidate {
	var out []candidate
	for _, o := range offers.Offers {
		if o.Organisation == "" || o.Endpoint == "" {
			continue
		}
		pk, err := protocol.ParseEd25519Key(o.Node)
		if err != nil {
			continue
		}
		for _, cl := range o.Offer.Classes {
			iso, ok := pol.Isolate(cl)
			if !ok {
				continue
			}
			if cl == string(attest.ClassSoftware) && !slices.ContainsFunc(iso.PlatformKeys, func(k string) bool { return software.PlatformKeyMatches(k, pk) }) {
				continue
			}
			out = append(out, candidate{node: o.Node, org: o.Organisation, class: cl, endpoint: o.Endpoint})
			break
		}
	}
	slices.SortFunc(out, func(a, b candidate) int { return strings.Compare(a.node, b.node) })
	return out
}

// choose takes cands[first], then the others in order, skipping any of an
// organisation (or, when distinct, an isolate class) already taken, until
// it holds n; fewer when cands do not allow n.
func choose(cands []candidate, first, n int, distinct bool) []candidate {
	chosen := []candidate{cands[first]}
	for _, c := range cands {
		if len(chosen) == n {
			break
		}
		if slices.ContainsFunc(chosen, func(x candidate) bool { return x.org == c.org || distinct && x.class == c.class }) {
			continue
		}
		chosen = append(chosen, c)
	}
	return chosen
}

// CreateReplicas starts a replicated session of the policy document doc
// (whose parsed form is pol, asking for N > 1 replicas): the node first
// talks to and N−1 others from the ledger's live offers, no two of one
// organisation (nor of one isolate class when the policy asks), each a
// session of a new replica set. opts are the options each node is dialled
// with (platform keys, creator, token). It returns once the ledger shows
// every session joined the set.
func CreateReplicas(ctx context.Context, first *Client, lc *lclient.Client, doc []byte, pol *policy.Policy, opts ...Option) (*Replicas, error) {
	n := pol.ReplicaCount()
	info, err := first.NodeInfo(ctx)
	if err != nil {
		return nil, err
	}
	offers, err := lc.Offers(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the node directory: %w", err)
	}
	cands := candidates(offers, pol)
	i := slices.IndexFunc(cands, func(c candidate) bool { return c.node == info.PlatformKey })
	if i < 0 {
		return nil, fmt.Errorf("%w: node %s (%s) has no live offer the policy accepts on the ledger, with an organisation: replicas are chosen among those", ErrReplicas, first.base, info.PlatformKey)
	}
	distinct := pol.ReplicaClasses == policy.ReplicaClassesDistinct
	chosen := choose(cands, i, n, distinct)
	if len(chosen) < n {
		byOrg := map[string][]string{}
		for _, c := range cands {
			byOrg[c.org] = append(byOrg[c.org], c.node+" ("+c.class+")")
		}
		var orgs []string
		for o, nodes := range byOrg {
			orgs = append(orgs, fmt.Sprintf("%s: %s", o, strings.Join(nodes, ", ")))
		}
		slices.Sort(orgs)
		what := "organisations"
		if distinct {
			what = "organisations and isolate classes"
		}
		return nil, fmt.Errorf("%w: policy %q asks for %d replicas of distinct %s; the ledger's live offers the policy accepts come from %d organisation(s) — one organisation is one replica, however many nodes it runs: %s",
			ErrReplicas, pol.Name, n, what, len(byOrg), strings.Join(orgs, "; "))
	}
	var raw [protocol.SessionIDSize]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	set := &cloisterv1.ReplicaSet{Id: hex.EncodeToString(raw[:])}
	for _, c := range chosen {
		set.Members = append(set.Members, c.node)
	}
	r := &Replicas{Set: set.Id, pol: pol, ledger: lc}
	for _, c := range chosen {
		nc, err := Dial(ctx, c.endpoint, opts...)
		if err != nil {
			return nil, fmt.Errorf("replica on %s: %w", c.node, err)
		}
		if _, err := nc.createSession(ctx, doc, set); err != nil {
			return nil, fmt.Errorf("replica on node %s (%s, organisation %s): %w", c.node, c.endpoint, c.org, err)
		}
		nc.Close()
	}
	if err := r.load(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	for i, m := range r.Members {
		if len(r.Members) != len(set.Members) || m.Node != set.Members[i] {
			return nil, fmt.Errorf("%w: the ledger's replica set %s has members other than the nodes chosen (%s, not %s)", ErrReplicas, r.Set, m.Node, set.Members[i])
		}
	}
	return r, r.dial(ctx, opts)
}

// OpenReplicas finds replica set id on the ledger, for a principal that
// was given its id: every member with its session and endpoint. opts are
// the options each node is dialled with.
func OpenReplicas(ctx context.Context, lc *lclient.Client, id string, pol *policy.Policy, opts ...Option) (*Replicas, error) {
	r := &Replicas{Set: id, pol: pol, ledger: lc}
	if err := r.load(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	return r, r.dial(ctx, opts)
}

// dial makes a client of each member's node.
func (r *Replicas) dial(ctx context.Context, opts []Option) error {
	for _, m := range r.Members {
		c, err := Dial(ctx, m.Endpoint, opts...)
		if err != nil {
			r.Close()
			return fmt.Errorf("replica on node %s: %w", m.Node, err)
		}
		r.clients = append(r.clients, c)
	}
	return nil
}

// load reads the set until every member joined, at most bound.
func (r *Replicas) load(ctx context.Context, bound time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	for {
		rs, _, err := r.ledger.ReplicaSet(ctx, r.Set)
		if err == nil {
			joined := 0
			for _, m := range rs.Members {
				if m.Session != "" {
					joined++
				}
			}
			if rs.PolicyHash != r.pol.HashHex() {
				return fmt.Errorf("%w: replica set %s runs policy %s, not this one (%s)", ErrReplicas, r.Set, rs.PolicyHash, r.pol.HashHex())
			}
			if joined == len(rs.Members) {
				r.Members = rs.Members
				if offers, err := r.ledger.Offers(ctx); err == nil {
					// The offers carry the nodes' current endpoints.
					for i, m := range r.Members {
						for _, o := range offers.Offers {
							if o.Node == m.Node && o.Endpoint != "" {
								r.Members[i].Endpoint = o.Endpoint
							}
						}
					}
				}
				return nil
			}
			err = fmt.Errorf("%d of its %d sessions joined", joined, len(rs.Members))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("replica set %s on the ledger: %w", r.Set, err)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// Attest attests every replica's session against the policy (see
// Client.Attest), in member order; with "replica_classes": "distinct",
// no two may be of one isolate class.
func (r *Replicas) Attest(ctx context.Context) ([]*AttestedSession, error) {
	var out []*AttestedSession
	classes := map[attest.Class]string{}
	for i, m := range r.Members {
		as, err := r.clients[i].Attest(ctx, m.Session, r.pol)
		if err != nil {
			for _, a := range out {
				a.CloseIdleConnections()
			}
			return nil, fmt.Errorf("replica on node %s (organisation %s): %w", m.Node, m.Organisation, err)
		}
		if o, dup := classes[as.Claims().Class]; dup && r.pol.ReplicaClasses == policy.ReplicaClassesDistinct {
			return nil, fmt.Errorf("%w: replicas on %s and %s are both %s isolates; policy %q asks for distinct classes", ErrReplicas, o, m.Node, as.Claims().Class, r.pol.Name)
		}
		classes[as.Claims().Class] = m.Node
		out = append(out, as)
	}
	return out, nil
}

// Agreement checks, from the ledger, that the attested replicas agreed:
// the set read from entries included in a checkpoint the validators
// signed (statePath: the ledger state file, "" for the default); as many
// members as the policy asks, each of another organisation; every member
// committed a result signed by the session key its attestation pinned;
// all results equal. It returns the agreed digest, or an error wrapping
// ErrReplicasPending, ErrReplicasDisagree or ErrReplicas.
func (r *Replicas) Agreement(ctx context.Context, statePath string, attested []*AttestedSession) (string, error) {
	rs, err := r.ledger.VerifiedReplicaSet(ctx, statePath, r.Set)
	if err != nil {
		return "", err
	}
	n := r.pol.ReplicaCount()
	if len(rs.Members) != n || len(attested) != n {
		return "", fmt.Errorf("%w: replica set %s has %d members; policy %q asks for %d", ErrReplicas, r.Set, len(rs.Members), r.pol.Name, n)
	}
	if rs.PolicyHash != r.pol.HashHex() {
		return "", fmt.Errorf("%w: replica set %s runs policy %s", ErrReplicas, r.Set, rs.PolicyHash)
	}
	orgs := map[string]string{}
	for _, m := range rs.Members {
		if o, dup := orgs[m.Organisation]; dup {
			return "", fmt.Errorf("%w: replicas on %s and %s are both run by organisation %s; one organisation is one replica", ErrReplicas, o, m.Node, m.Organisation)
		}
		orgs[m.Organisation] = m.Node
	}
	if err := rs.Disagreement(); err != nil {
		return "", err
	}
	committed := 0
	for i, m := range rs.Members {
		if m.Result == 0 {
			continue
		}
		committed++
		if cl := attested[i].Claims(); cl.Class == attest.ClassSoftware && cl.Signer != m.Node {
			return "", fmt.Errorf("%w: the session attested for replica %s was signed by platform key %s", ErrReplicas, m.Node, cl.Signer)
		}
		if m.Session != attested[i].ID() || !bytes.Equal(m.SessionKey, attested[i].SessionKey()) {
			return "", fmt.Errorf("%w: the result of replica %s (organisation %s) is not signed by the session key its attestation pinned", ErrReplicas, m.Node, m.Organisation)
		}
	}
	if committed < n {
		return "", fmt.Errorf("%w: %d of %d replicas committed their results", ErrReplicasPending, committed, n)
	}
	return rs.Members[0].Digest, nil
}

// Client returns the client of member i's node.
func (r *Replicas) Client(i int) *Client { return r.clients[i] }

// Close closes the connections to the members' nodes.
func (r *Replicas) Close() {
	for _, c := range r.clients {
		c.Close()
	}
}
