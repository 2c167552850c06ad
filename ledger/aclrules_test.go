package ledger

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// aclChain is a chain at a given rule version whose block times the test
// sets (one second a block), with helpers for the key broker's entries.
type aclChain struct {
	*abciChain
	t     *testing.T
	nonce uint64
}

func newACLChain(t *testing.T, version int) *aclChain {
	t.Helper()
	c, err := newABCIChain(t, "acl-test", []byte(`{"rules_version":`+strconv.Itoa(version)+`}`), []ed25519.PrivateKey{seedKey(0x51)}, time.Now().UTC().Truncate(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return &aclChain{abciChain: c, t: t}
}

func (c *aclChain) entry(k ed25519.PrivateKey, kind verify.Kind, body any) []byte {
	c.t.Helper()
	c.nonce++
	se, err := verify.NewEntryWithNonce(k, kind, body, c.nonce, c.at(c.height+1))
	if err != nil {
		c.t.Fatal(err)
	}
	return se.Encode()
}

// want runs txs as one block and checks each result: "ok", or a refusal
// code and a fragment of its reason ("unauthorized: revoked").
func (c *aclChain) want(txs [][]byte, want ...string) *abci.FinalizeBlockResponse {
	c.t.Helper()
	fb := c.block(txs...)
	skip := len(fb.TxResults) - len(txs) // the checkpoint the proposer put first
	for i, w := range want {
		r := fb.TxResults[skip+i]
		code, frag, _ := strings.Cut(w, ": ")
		got := "ok"
		if r.Code != 0 {
			got = codeFromABCI(r.Code)
		}
		if got != code || frag != "" && !strings.Contains(r.Log, frag) {
			c.t.Errorf("height %d tx %d: %s (%s), want %s", c.height, i, got, r.Log, w)
		}
	}
	return fb
}

func (c *aclChain) one(tx []byte, want string) uint64 {
	c.t.Helper()
	st, _ := c.a.state()
	c.want([][]byte{tx}, want)
	return st.Size
}

func pubText(k ed25519.PrivateKey) string {
	return protocol.FormatEd25519Key(k.Public().(ed25519.PublicKey))
}

// aclWorld is an artifact with two brokers (threshold 2), a node with two
// sessions, and its owner.
type aclWorld struct {
	c                       *aclChain
	owner, node, other      ed25519.PrivateKey
	brokers                 [2]ed25519.PrivateKey
	digest, measurement, ph string
}

func newACLWorld(t *testing.T) *aclWorld {
	w := &aclWorld{c: newACLChain(t, RulesV3), owner: seedKey(0x61), node: seedKey(0x62), other: seedKey(0x63),
		brokers: [2]ed25519.PrivateKey{seedKey(0x64), seedKey(0x65)}}
	d := sha256.Sum256([]byte("ciphertext"))
	w.digest = "sha256:" + hex.EncodeToString(d[:])
	w.measurement = strings.Repeat("ab", 32)
	w.ph = strings.Repeat("cd", 32)
	nb := nodeBody(w.node.Public().(ed25519.PublicKey))
	nb["measurement"] = w.measurement
	w.c.want([][]byte{
		w.c.entry(w.node, KindNodeRegistered, nb),
	}, "ok")
	w.c.want([][]byte{
		w.c.entry(w.node, KindSessionEvent, map[string]any{"session": "s1", "event": "session.created", "policy_hash": w.ph}),
		w.c.entry(w.node, KindSessionEvent, map[string]any{"session": "s2", "event": "session.created", "policy_hash": w.ph}),
		w.c.entry(w.owner, KindArtifactRegistered, w.artifact()),
	}, "ok", "ok", "ok")
	return w
}

func (w *aclWorld) artifact() acl.Artifact {
	return acl.Artifact{Digest: w.digest, PlaintextSHA256: strings.Repeat("01", 32),
		Brokers: []string{pubText(w.brokers[0]), pubText(w.brokers[1])}, Threshold: 2,
		Commitment: []string{strings.Repeat("02", 32), strings.Repeat("03", 32)}}
}

func (w *aclWorld) grant(session string, uses uint64, notAfter time.Time) acl.Grant {
	return acl.Grant{Artifact: w.digest, Owner: pubText(w.owner), Grantee: acl.Grantee{Node: pubText(w.node), Session: session},
		NotAfter: acl.FormatTime(notAfter), MaxUses: uses}
}

func (w *aclWorld) release(broker int, grant uint64, session string) []byte {
	return w.c.entry(w.brokers[broker], KindKeyReleased, acl.Release{Artifact: w.digest, Owner: pubText(w.owner), Grant: grant,
		Node: pubText(w.node), Session: session, PolicyHash: w.ph, Class: "software", Measurement: w.measurement,
		EvidenceSHA256: strings.Repeat("ee", 32), Share: broker + 1})
}

func TestACLArtifactsOwnedByTheirRegistrant(t *testing.T) {
	t.Parallel()
	w := newACLWorld(t)
	c := w.c
	// The same owner again: a replay. Someone else: their own artifact,
	// which gives them no say over the owner's.
	c.want([][]byte{c.entry(w.owner, KindArtifactRegistered, w.artifact()), c.entry(w.other, KindArtifactRegistered, w.artifact())},
		"replay: registered", "ok")
	g := w.grant("s1", 1, c.at(100))
	c.want([][]byte{c.entry(w.other, KindACLGranted, g)}, "unauthorized: names no delegation")
	// Granting on an artifact nobody registered.
	g2 := g
	g2.Artifact = "sha256:" + strings.Repeat("00", 32)
	c.want([][]byte{c.entry(w.owner, KindACLGranted, g2)}, "missing_reference: no artifact.registered")
	// Malformed bodies: unknown fields, a bad window, a threshold beyond
	// the brokers.
	c.want([][]byte{
		c.entry(w.owner, KindACLGranted, map[string]any{"artifact": w.digest, "owner": pubText(w.owner), "grantee": g.Grantee, "not_after": g.NotAfter, "max_uses": 1, "extra": 1}),
		c.entry(w.owner, KindACLGranted, w.grant("s1", 1, c.at(0))),
		c.entry(w.owner, KindArtifactRegistered, acl.Artifact{Digest: "sha256:" + strings.Repeat("11", 32), PlaintextSHA256: strings.Repeat("01", 32), Brokers: []string{pubText(w.brokers[0])}, Threshold: 2, Commitment: []string{"", ""}}),
		c.entry(w.owner, KindACLGranted, w.grant("s9", 1, c.at(100))),
	}, "malformed: unknown field", "malformed: already past", "malformed: threshold", "missing_reference: no session.created")
}

func TestACLReleasesJudgedAtBlockTime(t *testing.T) {
	t.Parallel()
	w := newACLWorld(t)
	c := w.c
	gi := c.one(c.entry(w.owner, KindACLGranted, w.grant("s1", 1, c.at(c.height+6))), "ok")
	// Both brokers release to s1: one use. A retry too.
	c.want([][]byte{w.release(0, gi, "s1"), w.release(1, gi, "s1"), w.release(0, gi, "s1")}, "ok", "ok", "ok")
	// Another session on a grant for s1: refused for the grantee, not
	// for uses.
	c.want([][]byte{w.release(0, gi, "s2")}, "unauthorized: not session s2")
	// Not a broker of the artifact, or the other broker's share number.
	bad := c.entry(w.other, KindKeyReleased, acl.Release{Artifact: w.digest, Owner: pubText(w.owner), Grant: gi, Node: pubText(w.node),
		Session: "s1", PolicyHash: w.ph, Class: "software", Measurement: w.measurement, EvidenceSHA256: strings.Repeat("ee", 32), Share: 1})
	swapped := c.entry(w.brokers[1], KindKeyReleased, acl.Release{Artifact: w.digest, Owner: pubText(w.owner), Grant: gi, Node: pubText(w.node),
		Session: "s1", PolicyHash: w.ph, Class: "software", Measurement: w.measurement, EvidenceSHA256: strings.Repeat("ee", 32), Share: 1})
	otherPolicy := c.entry(w.brokers[0], KindKeyReleased, acl.Release{Artifact: w.digest, Owner: pubText(w.owner), Grant: gi, Node: pubText(w.node),
		Session: "s1", PolicyHash: strings.Repeat("00", 32), Class: "software", Measurement: w.measurement, EvidenceSHA256: strings.Repeat("ee", 32), Share: 1})
	c.want([][]byte{bad, swapped, otherPolicy}, "unauthorized: not broker 1", "unauthorized: not broker 1", "unauthorized: was created for policy")
	// Block time passes the window; the entries' own times are not
	// what counts.
	for range 6 {
		c.block()
	}
	c.want([][]byte{w.release(0, gi, "s1")}, "unauthorized: expired")

	// Uses: a class grant of 1 use; the first session takes it across
	// both brokers, the second finds none left.
	cg := acl.Grant{Artifact: w.digest, Owner: pubText(w.owner), Grantee: acl.Grantee{Class: "software", Measurements: []string{w.measurement}},
		NotAfter: acl.FormatTime(c.at(c.height + 50)), MaxUses: 1}
	ci := c.one(c.entry(w.owner, KindACLGranted, cg), "ok")
	c.want([][]byte{w.release(0, ci, "s1"), w.release(1, ci, "s1"), w.release(1, ci, "s2")}, "ok", "ok", "unauthorized: all are used")
	// A class grant for another measurement.
	cg.Grantee.Measurements = []string{strings.Repeat("99", 32)}
	oi := c.one(c.entry(w.owner, KindACLGranted, cg), "ok")
	c.want([][]byte{w.release(0, oi, "s1")}, "unauthorized: measurement")

	// Not before: refused until block time reaches it.
	nb := w.grant("s2", 5, c.at(c.height+50))
	nb.NotBefore = acl.FormatTime(c.at(c.height + 3))
	ni := c.one(c.entry(w.owner, KindACLGranted, nb), "ok")
	c.want([][]byte{w.release(0, ni, "s2")}, "unauthorized: valid from")
	c.block()
	c.want([][]byte{w.release(0, ni, "s2")}, "ok")

	// Revoked: a release in the same block after the revocation is
	// refused; so is a second revocation and one by a stranger.
	ri := c.one(c.entry(w.owner, KindACLGranted, w.grant("s2", 5, c.at(c.height+50))), "ok")
	c.want([][]byte{
		c.entry(w.other, KindACLRevoked, map[string]any{"grant": ri}),
		c.entry(w.owner, KindACLRevoked, map[string]any{"grant": ri}),
		w.release(0, ri, "s2"),
		c.entry(w.owner, KindACLRevoked, map[string]any{"grant": ri}),
	}, "unauthorized: revoked by the artifact's owner", "ok", "unauthorized: revoked by entry", "replay: already revoked")
}

func TestACLDelegatesWithinLimits(t *testing.T) {
	t.Parallel()
	w := newACLWorld(t)
	c := w.c
	dispatcher := seedKey(0x66)
	del := acl.Delegation{Artifact: w.digest, Delegate: pubText(dispatcher), NotAfter: acl.FormatTime(c.at(c.height + 100)),
		Limits: acl.Limits{Classes: []string{"software"}, Measurements: []string{w.measurement}, MaxDurationSeconds: 30, MaxUses: 2, MaxGrants: 2}}
	// Only the owner delegates.
	c.want([][]byte{c.entry(w.other, KindACLDelegated, del)}, "missing_reference: only an artifact's owner delegates")
	di := c.one(c.entry(w.owner, KindACLDelegated, del), "ok")
	under := func(session string, uses uint64, d time.Duration) acl.Grant {
		g := w.grant(session, uses, c.at(c.height+1).Add(d))
		g.Delegation = &di
		return g
	}
	wrongClass := acl.Grant{Artifact: w.digest, Owner: pubText(w.owner), Grantee: acl.Grantee{Class: "sev-snp", Measurements: []string{w.measurement}},
		NotAfter: acl.FormatTime(c.at(c.height + 10)), MaxUses: 1, Delegation: &di}
	otherMeasurement := wrongClass
	otherMeasurement.Grantee = acl.Grantee{Class: "software", Measurements: []string{strings.Repeat("77", 32)}}
	noDelegation := under("s1", 1, 10*time.Second)
	noDelegation.Delegation = nil
	c.want([][]byte{
		c.entry(dispatcher, KindACLGranted, under("s1", 1, time.Hour)),
		c.entry(dispatcher, KindACLGranted, under("s1", 3, 10*time.Second)),
		c.entry(dispatcher, KindACLGranted, wrongClass),
		c.entry(dispatcher, KindACLGranted, otherMeasurement),
		c.entry(dispatcher, KindACLGranted, noDelegation),
		c.entry(w.other, KindACLGranted, under("s1", 1, 10*time.Second)),
	}, "unauthorized: at most 30s", "unauthorized: at most 2", "unauthorized: class \"sev-snp\"", "unauthorized: measurement", "unauthorized: names no delegation", "unauthorized: another delegate")
	gi := c.one(c.entry(dispatcher, KindACLGranted, under("s1", 2, 20*time.Second)), "ok")
	c.want([][]byte{w.release(0, gi, "s1")}, "ok")
	// The delegate revokes its own grant; the owner revokes the
	// delegation, which ends grants made under it and new ones.
	g2 := c.one(c.entry(dispatcher, KindACLGranted, under("s2", 1, 20*time.Second)), "ok")
	c.want([][]byte{c.entry(dispatcher, KindACLGranted, under("s2", 1, 20*time.Second))}, "unauthorized: allows 2 grants")
	c.want([][]byte{
		c.entry(dispatcher, KindACLRevoked, map[string]any{"delegation": di}),
		c.entry(w.owner, KindACLRevoked, map[string]any{"delegation": di}),
		w.release(0, g2, "s2"),
	}, "unauthorized: only the artifact's owner", "ok", "unauthorized: since revoked")
}

// TestACLRulesBeforeV3: chains at version 2 keep the first grant rule
// (whoever grants first owns the resource) and know none of the new kinds.
func TestACLRulesBeforeV3(t *testing.T) {
	t.Parallel()
	c := newACLChain(t, RulesV2)
	owner, other := seedKey(0x71), seedKey(0x72)
	g := c.one(c.entry(owner, KindACLGranted, map[string]any{"resource": "dataset/1", "grantee": "bob"}), "ok")
	c.want([][]byte{
		c.entry(other, KindACLGranted, map[string]any{"resource": "dataset/1", "grantee": "eve"}),
		c.entry(other, KindACLRevoked, map[string]any{"grant": g}),
		c.entry(owner, KindACLRevoked, map[string]any{"grant": g}),
		c.entry(owner, KindACLRevoked, map[string]any{"grant": g}),
		c.entry(owner, KindArtifactRegistered, map[string]any{"digest": "x"}),
	}, "unauthorized", "unauthorized", "ok", "replay", "malformed: not one of the ledger's kinds")
}
