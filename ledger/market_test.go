package ledger

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/deal"
)

// marketWorld is a v5 chain with an organisation, two registered nodes
// with sessions and live offers, a consumer and two dispatchers.
type marketWorld struct {
	c                                    *aclChain
	orgA, orgB, n1, n2, consumer, d1, d2 ed25519.PrivateKey
	offer1, offer2                       uint64
	ph                                   string
	pol                                  []byte
}

func newMarketWorld(t *testing.T) *marketWorld {
	w := &marketWorld{c: newACLChain(t, RulesV5), orgA: seedKey(0x81), orgB: seedKey(0x82), n1: seedKey(0x83), n2: seedKey(0x84),
		consumer: seedKey(0x85), d1: seedKey(0x86), d2: seedKey(0x87)}
	val := seedKey(0x51)
	w.c.want([][]byte{
		w.c.entry(val, KindMemberAdmitted, map[string]any{"member": pubText(w.orgA)}),
		w.c.entry(val, KindMemberAdmitted, map[string]any{"member": pubText(w.orgB)}),
	}, "ok", "ok")
	reg := func(k, org ed25519.PrivateKey) []byte {
		b := nodeBody(k.Public().(ed25519.PublicKey))
		b["organisation"], b["endpoint"] = pubText(org), "https://127.0.0.1:1"
		return w.c.entry(k, KindNodeRegistered, b)
	}
	w.c.want([][]byte{reg(w.n1, w.orgA), reg(w.n2, w.orgB)}, "ok", "ok")
	w.pol, w.ph = testPolicy(t, w.consumer.Public().(ed25519.PublicKey))
	var txs [][]byte
	for _, n := range []ed25519.PrivateKey{w.n1, w.n2} {
		for _, s := range []string{sess(1), sess(2)} {
			txs = append(txs, w.c.entry(n, KindSessionEvent, map[string]any{"session": s, "event": "session.created", "policy_hash": w.ph}))
		}
	}
	w.c.want(txs, "ok", "ok", "ok", "ok")
	w.offer1 = w.c.one(w.c.entry(w.n1, KindOffer, offerBody(600)), "ok")
	w.offer2 = w.c.one(w.c.entry(w.n2, KindOffer, offerBody(600)), "ok")
	return w
}

func sess(i int) string { return strings.Repeat("0", 31) + string(rune('0'+i)) }

func (w *marketWorld) request(id string, deadline time.Time) deal.Request {
	return deal.Request{ID: id, ProgramSHA256: strings.Repeat("01", 32), Sealed: "sha256:" + strings.Repeat("02", 32),
		Requirement: "class == 'software'", Inputs: []string{"text"},
		Deadline: acl.FormatTime(deadline), MaxPrice: "0.01", SealingKey: "x25519:abc"}
}

func (w *marketWorld) assignment(id string, token uint64, node ed25519.PrivateKey, session string, f1, f2 int) deal.Assignment {
	return deal.Assignment{Request: id, Token: token, Node: pubText(node), Session: session, PolicyHash: w.ph, Policy: w.pol,
		Class: "software", ClaimsSHA256: strings.Repeat("ee", 32),
		Candidates: []deal.Candidate{{Node: pubText(w.n1), Offer: w.offer1, Price: "0.001", Failures: f1},
			{Node: pubText(w.n2), Offer: w.offer2, Price: "0.001", Failures: f2}},
		RunDeadline: acl.FormatTime(w.c.at(w.c.height + 30))}
}

func (w *marketWorld) record(node ed25519.PrivateKey) *ProviderRecord {
	var pr *ProviderRecord
	w.c.a.store.view(func(r reader) error {
		pr = providerRecord(blockView{r: r}, node.Public().(ed25519.PublicKey))
		return nil
	})
	return pr
}

// The fencing token: one live assignment per request, whoever submits
// it; stale tokens are refused for failures and accounting alike; a
// finished request takes no assignment; the record of each provider
// counts what the ledger saw.
func TestMarketFencing(t *testing.T) {
	t.Parallel()
	w := newMarketWorld(t)
	c := w.c
	id := hex.EncodeToString(sha256.New().Sum([]byte("r1"))[:32])
	other := seedKey(0x88)
	dl := c.at(c.height + 120)
	c.want([][]byte{c.entry(w.consumer, KindMarketRequest, w.request(id, dl))}, "ok")
	bad := w.request(strings.Repeat("ab", 32), c.at(c.height-5))
	c.want([][]byte{
		c.entry(other, KindMarketRequest, w.request(id, dl)),
		c.entry(w.consumer, KindMarketRequest, bad),
		c.entry(w.d1, KindMarketAssigned, w.assignment(strings.Repeat("cd", 32), 1, w.n1, sess(1), 0, 0)),
	}, "replay: is taken", "malformed: deadline", "missing_reference: no market.request")

	// Two dispatchers race for token 1 in one block: one wins.
	c.want([][]byte{
		c.entry(w.d1, KindMarketAssigned, w.assignment(id, 1, w.n1, sess(1), 0, 0)),
		c.entry(w.d2, KindMarketAssigned, w.assignment(id, 1, w.n2, sess(1), 0, 0)),
		c.entry(w.d2, KindMarketAssigned, w.assignment(id, 2, w.n2, sess(1), 0, 0)),
	}, "ok", "replay: has a live assignment", "replay: has a live assignment")

	// Only the dispatcher or the consumer fails a live assignment before
	// its run deadline; only the live token.
	c.want([][]byte{
		c.entry(w.d2, KindMarketFailed, deal.Failure{Request: id, Token: 1, Reason: deal.ReasonUnreachable}),
		c.entry(w.d1, KindMarketFailed, deal.Failure{Request: id, Token: 2, Reason: deal.ReasonUnreachable}),
		c.entry(w.d1, KindMarketFailed, deal.Failure{Request: id, Token: 1, Reason: "bored"}),
		c.entry(w.d1, KindMarketFailed, deal.Failure{Request: id, Token: 1, Reason: deal.ReasonUnreachable}),
	}, "unauthorized: only the dispatcher", "replay: not live", "malformed: reason", "ok")
	if pr := w.record(w.n1); pr.Runs != 1 || pr.Failures != 1 || len(pr.Recent) != 1 || !pr.Recent[0] {
		t.Fatalf("n1's record after a failure: %+v", pr)
	}

	// Failover: the failed node is not assigned again; the ranking inputs
	// must be the ledger's (n1 has 1 failure now); token must be next.
	c.want([][]byte{
		c.entry(w.d1, KindMarketAssigned, w.assignment(id, 2, w.n1, sess(2), 1, 0)),
		c.entry(w.d1, KindMarketAssigned, w.assignment(id, 2, w.n2, sess(2), 0, 0)),
		c.entry(w.d1, KindMarketAssigned, w.assignment(id, 1, w.n2, sess(2), 1, 0)),
	}, "unauthorized: already failed", "malformed: 1 failures", "replay: stale")
	wrongSession := w.assignment(id, 2, w.n2, strings.Repeat("9", 32), 1, 0)
	dear := w.assignment(id, 2, w.n2, sess(2), 1, 0)
	dear.Candidates[1].Price = "0.5"
	c.want([][]byte{c.entry(w.d1, KindMarketAssigned, wrongSession), c.entry(w.d1, KindMarketAssigned, dear)},
		"missing_reference: no session.created", "malformed: offer price")
	c.want([][]byte{c.entry(w.d2, KindMarketAssigned, w.assignment(id, 2, w.n2, sess(2), 1, 0))}, "ok")

	// Accounting: the consumer only, the live token only, its provider.
	acct := func(token uint64, provider ed25519.PrivateKey) deal.Account {
		return deal.Account{Request: id, Token: token, Provider: pubText(provider), Class: "software", CPUMillis: 900, WallMillis: 1000, ObservedWallMillis: 1100, Price: "0.001"}
	}
	c.want([][]byte{
		c.entry(w.consumer, KindMarketAccounted, acct(1, w.n1)),
		c.entry(w.d2, KindMarketAccounted, acct(2, w.n2)),
		c.entry(w.consumer, KindMarketAccounted, acct(2, w.n1)),
		c.entry(w.consumer, KindMarketAccounted, acct(2, w.n2)),
		c.entry(w.consumer, KindMarketAccounted, acct(2, w.n2)),
		c.entry(w.d1, KindMarketAssigned, w.assignment(id, 3, w.n1, sess(2), 1, 0)),
		c.entry(w.d2, KindMarketFailed, deal.Failure{Request: id, Token: 2, Reason: deal.ReasonDeadline}),
	}, "replay: abandoned assignment is not counted", "unauthorized: only the consumer", "malformed: was assigned to",
		"ok", "replay: finished", "replay: finished", "replay: not live")
	if pr := w.record(w.n2); pr.Runs != 1 || pr.Failures != 0 || len(pr.LatencyMs) != 1 || pr.LatencyMs[0] != 1000 {
		t.Fatalf("n2's record after its run: %+v", pr)
	}
}

// Anyone fails an assignment whose run deadline is past (a dispatcher
// that died cannot hold a request forever); before it, a stranger cannot.
func TestMarketRunDeadline(t *testing.T) {
	t.Parallel()
	w := newMarketWorld(t)
	c := w.c
	id := strings.Repeat("5a", 32)
	c.want([][]byte{c.entry(w.consumer, KindMarketRequest, w.request(id, c.at(c.height+120)))}, "ok")
	a := w.assignment(id, 1, w.n1, sess(1), 0, 0)
	a.RunDeadline = acl.FormatTime(c.at(c.height + 3))
	c.want([][]byte{c.entry(w.d1, KindMarketAssigned, a)}, "ok")
	f := deal.Failure{Request: id, Token: 1, Reason: deal.ReasonDeadline}
	c.want([][]byte{c.entry(w.d2, KindMarketFailed, f)}, "unauthorized: run deadline")
	c.block()
	c.block()
	c.want([][]byte{c.entry(w.d2, KindMarketFailed, f)}, "ok")
	late := w.assignment(id, 2, w.n2, sess(1), 1, 0)
	late.RunDeadline = acl.FormatTime(c.at(c.height + 500))
	c.want([][]byte{c.entry(w.d2, KindMarketAssigned, late)}, "malformed: run_deadline")
}

// A dispatcher's grants must lie within the innovator's delegation:
// organisations (version 5), and classes, measurements, duration and
// uses as before. Version 4 does not know the organisations limit.
func TestDelegationOrganisations(t *testing.T) {
	t.Parallel()
	w := newMarketWorld(t)
	c := w.c
	owner := seedKey(0x89)
	d := sha256.Sum256([]byte("sealed"))
	digest := "sha256:" + hex.EncodeToString(d[:])
	art := acl.Artifact{Digest: digest, PlaintextSHA256: strings.Repeat("01", 32), Brokers: []string{pubText(seedKey(0x8a))},
		Threshold: 1, Commitment: []string{strings.Repeat("02", 32)}}
	c.want([][]byte{c.entry(owner, KindArtifactRegistered, art)}, "ok")
	del := acl.Delegation{Artifact: digest, Delegate: pubText(w.d1), NotAfter: acl.FormatTime(c.at(c.height + 3600)),
		Limits: acl.Limits{Classes: []string{"software"}, Organisations: []string{pubText(w.orgA)}, MaxDurationSeconds: 300, MaxUses: 1}}
	di := c.one(c.entry(owner, KindACLDelegated, del), "ok")
	grant := func(node ed25519.PrivateKey, dur time.Duration, uses uint64) acl.Grant {
		return acl.Grant{Artifact: digest, Owner: pubText(owner), Grantee: acl.Grantee{Node: pubText(node), Session: sess(1)},
			NotAfter: acl.FormatTime(c.at(c.height + 1).Add(dur)), MaxUses: uses, Delegation: &di}
	}
	classGrant := grant(w.n1, time.Minute, 1)
	classGrant.Grantee = acl.Grantee{Class: "software", Measurements: []string{strings.Repeat("ab", 32)}}
	c.want([][]byte{
		c.entry(w.d1, KindACLGranted, grant(w.n2, time.Minute, 1)),
		c.entry(w.d1, KindACLGranted, classGrant),
		c.entry(w.d1, KindACLGranted, grant(w.n1, time.Hour, 1)),
		c.entry(w.d1, KindACLGranted, grant(w.n1, time.Minute, 2)),
		c.entry(w.d2, KindACLGranted, grant(w.n1, time.Minute, 1)),
		c.entry(w.d1, KindACLGranted, grant(w.n1, time.Minute, 1)),
	}, "unauthorized: not by one of the delegation's 1 organisations", "unauthorized: not a class",
		"unauthorized: at most 5m0s", "unauthorized: 2 uses", "unauthorized: names another delegate", "ok")

	// Version 4: the limit is unknown, so refused rather than ignored.
	c4 := newACLChain(t, RulesV4)
	c4.want([][]byte{c4.entry(owner, KindArtifactRegistered, art)}, "ok")
	c4.want([][]byte{c4.entry(owner, KindACLDelegated, del)}, "malformed: organisations")
	c4.want([][]byte{c4.entry(w.consumer, KindMarketRequest, w.request(strings.Repeat("ab", 32), time.Now().Add(time.Hour)))},
		"malformed: not one of the ledger's kinds")
}
