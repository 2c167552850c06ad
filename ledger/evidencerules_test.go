package ledger

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest/software"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// TestEvidenceJudgedByConsensus: once a validator publishes the
// consortium's reference values for a class, node.registered evidence of
// that class is verified by the state machine at block time and refused
// with the reason when it fails — garbage, another measurement, evidence
// too old for the values' maximum age —; the same evidence is accepted at
// a block time inside its validity window and refused outside it, and so
// is an offer resting on it. Before any values, registrations pass as in
// version 4.
func TestEvidenceJudgedByConsensus(t *testing.T) {
	t.Parallel()
	c := newACLChain(t, RulesV13)
	val := seedKey(0x51)
	good := sha256.Sum256([]byte("runtime"))
	other := sha256.Sum256([]byte("another runtime"))
	evidence := func(k ed25519.PrivateKey, m [32]byte) string { return softwareEvidence(t, k, m, c.at(c.height)) }
	reg := func(k ed25519.PrivateKey, ev string) []byte {
		b := nodeBody(k.Public().(ed25519.PublicKey))
		b["evidence"] = ev
		return c.entry(k, KindNodeRegistered, b)
	}
	early, garbage, wrong, n := seedKey(0xd1), seedKey(0xd2), seedKey(0xd3), seedKey(0xd4)
	c.want([][]byte{reg(early, evidence(early, good)), reg(garbage, "ZXZpZGVuY2U=")}, "ok", "ok")

	values := map[string]any{"class": "software", "measurements": []string{hex.EncodeToString(good[:])}, "max_age_seconds": 60}
	c.want([][]byte{
		c.entry(n, KindReferenceValues, values),
		c.entry(val, KindReferenceValues, map[string]any{"class": "software", "unknown": 1}),
		c.entry(val, KindReferenceValues, values),
	}, "unauthorized: validator", "malformed: unknown field", "ok")

	nEv := evidence(n, good)
	c.want([][]byte{
		reg(garbage, "ZXZpZGVuY2U="),
		reg(wrong, evidence(wrong, other)),
		reg(n, nEv),
		c.entry(early, KindOffer, offerBody(60)),
	}, "unauthorized: fails the consortium's reference values (entry 2)", "unauthorized: measurement", "ok", "ok")

	// 120 s of block time later: the same evidence is older than the
	// values allow, and so is the registration an offer rests on.
	c.t0 = c.t0.Add(120 * time.Second)
	c.want([][]byte{
		reg(n, nEv),
		c.entry(n, KindOffer, offerBody(60)),
		reg(wrong, evidence(wrong, good)),
	}, "unauthorized: issued 2m", "unauthorized: issued 2m", "ok")
}

// TestReferenceValuesByGovernance: before rule version 16 turns on, one
// validator sets a class's reference values (version 13); from it on,
// one validator's reference.values is refused with the reason, and values
// proposed with validator.proposed are in force only from the block where
// members holding more than 2/3 of the power signed — until then the
// earlier values judge registrations, from then on the new ones do. A
// decided membership change voids the proposals still open. From rule
// version 17 a proposal names the values it replaces: refused when they
// are not those in force, and of two proposals open for one class, the
// one not decided first is refused approvals (propose again).
func TestReferenceValuesByGovernance(t *testing.T) {
	t.Parallel()
	keys := []ed25519.PrivateKey{seedKey(0x61), seedKey(0x62), seedKey(0x63), seedKey(0x64)}
	ac, err := newABCIChain(t, "refvals-test", []byte(`{"rules_version":15}`), keys, time.Now().UTC().Truncate(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	c := &aclChain{abciChain: ac, t: t}
	good := sha256.Sum256([]byte("runtime"))
	next := sha256.Sum256([]byte("next runtime"))
	evidence := func(k ed25519.PrivateKey, m [32]byte) string { return softwareEvidence(t, k, m, c.at(c.height)) }
	reg := func(seed byte, m [32]byte) []byte {
		k := seedKey(seed)
		b := nodeBody(k.Public().(ed25519.PublicKey))
		b["evidence"] = evidence(k, m)
		return c.entry(k, KindNodeRegistered, b)
	}
	values := func(m [32]byte) map[string]any {
		return map[string]any{"class": "software", "measurements": []string{hex.EncodeToString(m[:])}}
	}
	propose := func(k ed25519.PrivateKey, m [32]byte, set int) []byte {
		return c.entry(k, KindValidatorProposed, map[string]any{"change": ChangeReferenceValues, "values": values(m), "set": set})
	}
	approve := func(k ed25519.PrivateKey, idx uint64, tx []byte) []byte {
		leaf := verify.LeafHash(tx)
		return c.entry(k, KindValidatorApproved, map[string]any{"proposal": idx, "hash": hex.EncodeToString(leaf[:])})
	}
	size := func() uint64 { st, _ := c.a.state(); return st.Size }

	// Version 15 (13's rule): one validator's values are in force at once.
	c.want([][]byte{c.entry(keys[0], KindReferenceValues, values(good))}, "ok")
	first := size() - 1
	const on = 4
	var sched [][]byte
	for _, k := range keys[:3] {
		sched = append(sched, c.entry(k, KindRulesScheduled, map[string]any{"version": RulesV16, "height": on}))
	}
	c.want(sched, "ok", "ok", "ok")
	c.want(nil)
	if c.height != on-1 || c.a.schedule().at(on) != RulesV16 {
		t.Fatalf("at height %d, schedule %v", c.height, c.a.schedule())
	}

	// Version 16: one validator is refused; a proposal by one, approved
	// by one more (2 of 4), changes nothing yet.
	prop := propose(keys[0], next, 0)
	c.want([][]byte{
		c.entry(keys[1], KindReferenceValues, values(next)),
		propose(seedKey(0x70), next, 0),
		c.entry(keys[0], KindValidatorProposed, map[string]any{"change": ChangeReferenceValues, "values": map[string]any{"class": "software", "measurements": []string{"XY"}}, "set": 0}),
		propose(keys[0], next, 1),
		prop,
	}, "unauthorized: one validator cannot set the consortium's reference values: propose them (validator.proposed, change \"reference-values\"",
		"unauthorized: not a validator of the current set", "malformed: lower-case hex", "replay: set version 1", "ok")
	if c.height != on {
		t.Fatalf("proposal at height %d", c.height)
	}
	idx := size() - 1
	c.want([][]byte{approve(keys[1], idx, prop), approve(keys[1], idx, prop)}, "ok", "replay: approved proposal")
	c.want([][]byte{reg(0xe1, next), reg(0xe2, good)},
		fmt.Sprintf("unauthorized: fails the consortium's reference values (entry %d)", first), "ok")

	// The third signer decides: the proposed values judge from this block.
	c.want([][]byte{approve(keys[2], idx, prop), reg(0xe3, good), reg(0xe4, next)},
		"ok", fmt.Sprintf("unauthorized: fails the consortium's reference values (entry %d)", idx), "ok")
	c.want([][]byte{approve(keys[3], idx, prop)}, "replay: decided already (its reference values are in force)")
	var rec referenceRecord
	c.a.store.view(func(r reader) error {
		json.Unmarshal(r.get(bucketReferenceValues, []byte("software")), &rec)
		return nil
	})
	if rec.Index != idx || rec.Height != on+3 || len(rec.Approvals) != 2 || rec.Values.Measurements[0] != hex.EncodeToString(next[:]) {
		t.Fatalf("recorded values %+v", rec)
	}

	// A proposal still open when a membership change is decided is void.
	open := propose(keys[0], good, 0)
	c.want([][]byte{open}, "ok")
	openIdx := size() - 1
	change := c.entry(keys[0], KindValidatorProposed, map[string]any{"change": "power", "validator": pubText(keys[3]), "power": 2, "set": 0})
	c.want([][]byte{change}, "ok")
	changeIdx := size() - 1
	c.want([][]byte{approve(keys[1], changeIdx, change), approve(keys[2], changeIdx, change)}, "ok", "ok")
	c.want([][]byte{approve(keys[1], openIdx, open), approve(keys[2], openIdx, open)},
		"replay: proposal "+strconv.FormatUint(openIdx, 10)+" changes set version 0, and the set is at version 1 since", "replay: propose again")

	// Version 16 takes the old form only: no "replaces"; two proposals for
	// one class may both be open (the race version 17 closes).
	replacing := func(k ed25519.PrivateKey, m [32]byte, replaces any) []byte {
		return c.entry(k, KindValidatorProposed, map[string]any{"change": ChangeReferenceValues, "values": values(m), "set": 1, "replaces": replaces})
	}
	stale := propose(keys[0], good, 1)
	c.want([][]byte{replacing(keys[0], good, idx), stale}, `malformed: unknown field "replaces"`, "ok")
	staleIdx := size() - 1

	// Version 17: a proposal names the values it replaces (the entry in
	// force), and is refused when they are not the ones in force.
	on17 := c.height + 3
	sched = nil
	for _, k := range keys {
		sched = append(sched, c.entry(k, KindRulesScheduled, map[string]any{"version": RulesV17, "height": on17}))
	}
	c.want(sched, "ok", "ok", "ok", "ok")
	c.want(nil)
	if c.height != on17-1 || c.a.schedule().at(on17) != RulesV17 {
		t.Fatalf("at height %d, schedule %v", c.height, c.a.schedule())
	}
	other := sha256.Sum256([]byte("other runtime"))
	p1, p2 := replacing(keys[0], good, idx), replacing(keys[1], other, idx)
	inForce := fmt.Sprintf("the values of entry %d are in force (decided at height %d)", idx, on+3)
	c.want([][]byte{propose(keys[0], good, 1), replacing(keys[0], good, first), replacing(keys[0], good, nil), p1, p2},
		"replay: replacing no values; "+inForce+fmt.Sprintf(`: propose them again naming those ("replaces":%d)`, idx),
		fmt.Sprintf("replay: replacing the values of entry %d; %s", first, inForce),
		"malformed: replaces: want the index", "ok", "ok")
	p1Idx, p2Idx := size()-2, size()-1

	// Both open; a version 16 proposal left open names no values and is
	// refused as stale. The power is now 1+1+1+2: p1 decides with keys[3].
	c.want([][]byte{approve(keys[1], p1Idx, p1), approve(keys[0], p2Idx, p2), approve(keys[2], staleIdx, stale)},
		"ok", "ok", fmt.Sprintf("replay: proposal %d replaces no values of class software, and %s since; propose again", staleIdx, inForce))
	c.want([][]byte{approve(keys[3], p1Idx, p1), approve(keys[3], p2Idx, p2), approve(keys[2], p2Idx, p2), reg(0xe5, good)},
		"ok", fmt.Sprintf("replay: proposal %d replaces the values of entry %d of class software, and the values of entry %d are in force (decided at height %d) since; propose again (cloister ledger propose reference-values)", p2Idx, idx, p1Idx, c.height+1),
		"replay: propose again", "ok")
	c.want([][]byte{replacing(keys[1], other, p1Idx)}, "ok")
}

// softwareEvidence is a node's registration evidence, base64, of the
// software class with measurement m, issued at time at.
func softwareEvidence(t testing.TB, k ed25519.PrivateKey, m [32]byte, at time.Time) string {
	t.Helper()
	att, err := software.NewAttester(k, software.WithMeasurement(m), software.WithClock(func() time.Time { return at }))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := att.Attest(context.Background(), protocol.RegistrationReportData(k.Public().(ed25519.PublicKey)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(ev)
	return base64.StdEncoding.EncodeToString(b)
}
