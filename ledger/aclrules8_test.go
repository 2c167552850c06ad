package ledger

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest/software"
	"github.com/cloisterhq/cloister/ledger/acl"
)

// tcbWorld is a version 8 chain with an artifact, a delegate, and nodes
// that registered with real software evidence (one of them declaring
// another class) or with evidence that does not verify.
type tcbWorld struct {
	c                          *aclChain
	owner, dispatcher, broker  ed25519.PrivateKey
	honest, liar, unverifiable ed25519.PrivateKey
	digest, measurement, ph    string
}

func newTCBWorld(t *testing.T) *tcbWorld {
	w := &tcbWorld{c: newACLChain(t, RulesV8), owner: seedKey(0xa1), dispatcher: seedKey(0xa2), broker: seedKey(0xa3),
		honest: seedKey(0xa4), liar: seedKey(0xa5), unverifiable: seedKey(0xa6)}
	m := sha256.Sum256([]byte("runtime"))
	w.measurement, w.ph = hex.EncodeToString(m[:]), strings.Repeat("cd", 32)
	d := sha256.Sum256([]byte("tcb ciphertext"))
	w.digest = "sha256:" + hex.EncodeToString(d[:])
	// Registration evidence as a node makes it: software evidence signed
	// by the node's key over the registration report data, dated by the
	// chain's clock.
	reg := func(k ed25519.PrivateKey, class string, real bool) []byte {
		pub := k.Public().(ed25519.PublicKey)
		b := nodeBody(pub)
		b["class"], b["measurement"] = class, w.measurement
		if real {
			att, err := software.NewAttester(k, software.WithMeasurement(m), software.WithClock(func() time.Time { return w.c.at(w.c.height) }))
			if err != nil {
				t.Fatal(err)
			}
			ev, err := att.Attest(context.Background(), protocol.RegistrationReportData(pub))
			if err != nil {
				t.Fatal(err)
			}
			evj, _ := json.Marshal(ev)
			b["evidence"] = base64.StdEncoding.EncodeToString(evj)
		}
		return w.c.entry(k, KindNodeRegistered, b)
	}
	w.c.want([][]byte{reg(w.honest, "software", true), reg(w.liar, "sev-snp", true), reg(w.unverifiable, "software", false)}, "ok", "ok", "ok")
	var txs [][]byte
	for _, n := range []ed25519.PrivateKey{w.honest, w.liar, w.unverifiable} {
		txs = append(txs, w.c.entry(n, KindSessionEvent, map[string]any{"session": "s1", "event": "session.created", "policy_hash": w.ph}))
	}
	art := acl.Artifact{Digest: w.digest, PlaintextSHA256: strings.Repeat("01", 32), Brokers: []string{pubText(w.broker)}, Threshold: 1,
		Commitment: []string{strings.Repeat("02", 32)}}
	txs = append(txs, w.c.entry(w.owner, KindArtifactRegistered, art))
	w.c.want(txs, "ok", "ok", "ok", "ok")
	return w
}

func (w *tcbWorld) delegate(l acl.Limits) uint64 {
	l.MaxDurationSeconds, l.MaxUses = 600, 1
	return w.c.one(w.c.entry(w.owner, KindACLDelegated, acl.Delegation{Artifact: w.digest, Delegate: pubText(w.dispatcher),
		NotAfter: acl.FormatTime(w.c.at(w.c.height + 3600)), Limits: l}), "ok")
}

func (w *tcbWorld) grant(di uint64, node ed25519.PrivateKey) []byte {
	return w.c.entry(w.dispatcher, KindACLGranted, acl.Grant{Artifact: w.digest, Owner: pubText(w.owner),
		Grantee:  acl.Grantee{Node: pubText(node), Session: "s1"},
		NotAfter: acl.FormatTime(w.c.at(w.c.height + 60)), MaxUses: 1, Delegation: &di})
}

func (w *tcbWorld) release(grant uint64, node ed25519.PrivateKey, class string, svn map[string]uint64) []byte {
	return w.c.entry(w.broker, KindKeyReleased, acl.Release{Artifact: w.digest, Owner: pubText(w.owner), Grant: grant,
		Node: pubText(node), Session: "s1", PolicyHash: w.ph, Class: class, Measurement: w.measurement,
		EvidenceSHA256: strings.Repeat("ee", 32), Share: 1, SVN: svn})
}

// TestDelegationMinimumTCB: a delegate cannot grant to an isolate whose
// node's recorded evidence does not meet the delegation's TCB floor for
// its class — evidence lacking a floored component, evidence that does not
// verify, a node declaring a class its evidence is not — nor to a class
// of isolates; and a broker's release reporting security versions below
// the floor is refused as well.
func TestDelegationMinimumTCB(t *testing.T) {
	t.Parallel()
	w := newTCBWorld(t)
	c := w.c
	// Software evidence carries no security versions: a software floor
	// cannot be met by it.
	soft := w.delegate(acl.Limits{MinTCB: map[string]map[string]uint64{"software": {"svn": 1}}})
	classGrant := acl.Grant{Artifact: w.digest, Owner: pubText(w.owner), Grantee: acl.Grantee{Class: "software", Measurements: []string{w.measurement}},
		NotAfter: acl.FormatTime(c.at(c.height + 60)), MaxUses: 1, Delegation: &soft}
	c.want([][]byte{
		w.grant(soft, w.honest),
		c.entry(w.dispatcher, KindACLGranted, classGrant),
	}, `unauthorized: TCB component "svn"`, "unauthorized: must name a node and session")

	// A floor for another class: the honest software node passes; the
	// node whose evidence does not verify and the one declaring sev-snp
	// while its evidence is software do not.
	snp := w.delegate(acl.Limits{MinTCB: map[string]map[string]uint64{"sev-snp": {"snp": 8, "microcode": 0x44}}})
	c.want([][]byte{
		w.grant(snp, w.unverifiable),
		w.grant(snp, w.liar),
	}, "unauthorized: does not verify at block time", `unauthorized: declared class "sev-snp", its recorded evidence is software`)
	g := c.one(w.grant(snp, w.honest), "ok")

	// The broker reports what it verified in the release evidence; below
	// the floor of its class, or without a floored component, the ledger
	// refuses the release.
	c.want([][]byte{
		w.release(g, w.honest, "sev-snp", map[string]uint64{"snp": 5, "microcode": 0x44}),
		w.release(g, w.honest, "sev-snp", map[string]uint64{"snp": 9}),
	}, `unauthorized: TCB component "snp" of the isolate's sev-snp evidence is 5, below the delegation's minimum 8`,
		`unauthorized: TCB component "microcode"`)
	c.want([][]byte{w.release(g, w.honest, "sev-snp", map[string]uint64{"snp": 8, "microcode": 0x45})}, "ok")
}

// TestDelegationRate: a delegate makes at most the delegation's number of
// grants within any window of block time.
func TestDelegationRate(t *testing.T) {
	t.Parallel()
	w := newTCBWorld(t)
	c := w.c
	di := w.delegate(acl.Limits{Rate: &acl.Rate{Grants: 2, WindowSeconds: 5}})
	c.want([][]byte{w.grant(di, w.honest), w.grant(di, w.honest), w.grant(di, w.unverifiable)},
		"ok", "ok", "unauthorized: allows 2 grants in any 5s of block time, and 2 were made since")
	for range 3 { // block times advance one second a block
		c.want([][]byte{w.grant(di, w.honest)}, "unauthorized: allows 2 grants")
	}
	c.want([][]byte{w.grant(di, w.honest)}, "unauthorized: allows 2 grants") // 4 s after: still inside
	c.want([][]byte{w.grant(di, w.honest), w.grant(di, w.liar)}, "ok", "ok")
	c.want([][]byte{w.grant(di, w.honest)}, "unauthorized: allows 2 grants")
}

// TestDelegationV8LimitsRefusedBefore: chains before version 8 refuse the
// new limits and a release reporting security versions, rather than
// ignore them.
func TestDelegationV8LimitsRefusedBefore(t *testing.T) {
	t.Parallel()
	c := newACLChain(t, RulesV7)
	owner, broker, node := seedKey(0xb1), seedKey(0xb2), seedKey(0xb3)
	d := sha256.Sum256([]byte("v6"))
	digest := "sha256:" + hex.EncodeToString(d[:])
	c.want([][]byte{
		c.entry(node, KindNodeRegistered, nodeBody(node.Public().(ed25519.PublicKey))),
		c.entry(owner, KindArtifactRegistered, acl.Artifact{Digest: digest, PlaintextSHA256: strings.Repeat("01", 32),
			Brokers: []string{pubText(broker)}, Threshold: 1, Commitment: []string{strings.Repeat("02", 32)}}),
	}, "ok", "ok")
	del := func(l acl.Limits) []byte {
		l.MaxDurationSeconds, l.MaxUses = 60, 1
		return c.entry(owner, KindACLDelegated, acl.Delegation{Artifact: digest, Delegate: pubText(seedKey(0xb4)), NotAfter: acl.FormatTime(c.at(c.height + 600)), Limits: l})
	}
	c.want([][]byte{
		del(acl.Limits{MinTCB: map[string]map[string]uint64{"sev-snp": {"snp": 1}}}),
		del(acl.Limits{Rate: &acl.Rate{Grants: 1, WindowSeconds: 60}}),
		c.entry(broker, KindKeyReleased, acl.Release{Artifact: digest, Owner: pubText(owner), Grant: 1, Node: pubText(node), Session: "s1",
			PolicyHash: strings.Repeat("cd", 32), Class: "software", Measurement: "ab", EvidenceSHA256: strings.Repeat("ee", 32), Share: 1,
			SVN: map[string]uint64{"snp": 1}}),
	}, "malformed: rule version 8", "malformed: rule version 8", "malformed: rule version 8")
}
