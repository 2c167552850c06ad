package ledger

import (
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/ledger/model"
)

func testModel(name string, version uint64, nodes []ed25519.PrivateKey, allow ...ed25519.PrivateKey) model.Model {
	m := model.Model{Name: name, Version: version, ProgramSHA256: strings.Repeat("ab", 32),
		Functions: []model.Function{{Name: "count", Params: json.RawMessage(`{"type":"object"}`), Result: json.RawMessage(`{"type":"object"}`), Datasets: []string{"patients.csv"}}},
		Datasets:  []model.Dataset{{Name: "patients.csv", Schema: json.RawMessage(`{"type":"object"}`)}},
		Output:    model.Output{MinRows: 5, Budget: 2},
		Approval:  model.Approval{Mode: model.ApprovalAutomatic}}
	for _, n := range nodes {
		m.Nodes = append(m.Nodes, pubText(n))
	}
	for _, a := range allow {
		m.Approval.Allow = append(m.Approval.Allow, pubText(a))
	}
	return m
}

func (c *aclChain) models() ModelList {
	c.t.Helper()
	st, _ := c.a.state()
	var out ModelList
	if err := c.a.store.view(func(r reader) error { out = listModels(r, st); return nil }); err != nil {
		c.t.Fatal(err)
	}
	return out
}

// Models are published by organisations for their own nodes, in
// consecutive versions by their owner; receipts of calls come only from
// a serving node of the live version, for a published function and an
// allowed initiator, once per call id and within the budget; a revoked
// version takes no more receipts.
func TestModelsThroughTheStateMachine(t *testing.T) {
	t.Parallel()
	c := newACLChain(t, RulesV7)
	val, orgA, orgB, n1, n2, n3 := seedKey(0x51), seedKey(0x91), seedKey(0x92), seedKey(0x93), seedKey(0x94), seedKey(0x95)
	initiator, stranger := seedKey(0x96), seedKey(0x97)
	c.want([][]byte{
		c.entry(val, KindMemberAdmitted, map[string]any{"member": pubText(orgA)}),
		c.entry(val, KindMemberAdmitted, map[string]any{"member": pubText(orgB)}),
	}, "ok", "ok")
	reg := func(k, org ed25519.PrivateKey, ep string) []byte {
		b := nodeBody(k.Public().(ed25519.PublicKey))
		b["organisation"], b["endpoint"] = pubText(org), ep
		return c.entry(k, KindNodeRegistered, b)
	}
	c.want([][]byte{reg(n1, orgA, "https://127.0.0.1:7001"), reg(n2, orgB, "https://127.0.0.1:7002"), reg(n3, orgB, "https://127.0.0.1:7003")}, "ok", "ok", "ok")

	bad := testModel("hospital-a/stats", 1, []ed25519.PrivateKey{n1}, initiator)
	bad.Approval.Mode = "manual"
	c.want([][]byte{
		c.entry(stranger, KindModelPublished, testModel("hospital-a/stats", 1, []ed25519.PrivateKey{n1}, initiator)),
		c.entry(orgA, KindModelPublished, testModel("hospital-a/stats", 1, []ed25519.PrivateKey{n2}, initiator)),
		c.entry(orgA, KindModelPublished, testModel("hospital-a/stats", 2, []ed25519.PrivateKey{n1}, initiator)),
		c.entry(orgA, KindModelPublished, bad),
		c.entry(orgA, KindModelPublished, testModel("Hospital A/stats", 1, []ed25519.PrivateKey{n1}, initiator)),
	}, "unauthorized: not a consortium member", "unauthorized: is not registered for organisation",
		"missing_reference: the first is 1", "malformed: approval mode \"manual\" needs rule version 14", "malformed: model name")
	c.want([][]byte{c.entry(orgA, KindModelPublished, testModel("hospital-a/stats", 1, []ed25519.PrivateKey{n1}, initiator))}, "ok")
	c.want([][]byte{
		c.entry(orgB, KindModelPublished, testModel("hospital-a/stats", 2, []ed25519.PrivateKey{n2}, initiator)),
		c.entry(orgA, KindModelPublished, testModel("hospital-a/stats", 1, []ed25519.PrivateKey{n1}, initiator)),
	}, "unauthorized: belongs to", "replay: the next is 2")

	call := func(id byte, fn string, who ed25519.PrivateKey) model.Call {
		return model.Call{ID: strings.Repeat(string("0123456789abcdef"[id>>4])+string("0123456789abcdef"[id&15]), 32), Model: "hospital-a/stats", Version: 1, Function: fn,
			ArgsSHA256: strings.Repeat("cd", 32), ResultSHA256: strings.Repeat("ef", 32), Rows: 7,
			Caller: pubText(n3), Initiator: pubText(who)}
	}
	notNode := call(9, "count", initiator)
	notNode.Caller = pubText(stranger)
	planned := call(10, "count", initiator)
	planned.Plan = strings.Repeat("0f", 32)
	c.want([][]byte{
		c.entry(n2, KindModelCalled, call(1, "count", initiator)),
		c.entry(n1, KindModelCalled, call(2, "histogram", initiator)),
		c.entry(n1, KindModelCalled, call(3, "count", stranger)),
		c.entry(n1, KindModelCalled, notNode),
		c.entry(n1, KindModelCalled, planned),
		c.entry(n1, KindModelCalled, call(4, "count", initiator)),
	}, "unauthorized: does not serve", "missing_reference: publishes no function", "unauthorized: allow-list",
		"missing_reference: not a registered node", "malformed: needs rule version 14", "ok")
	c.want([][]byte{
		c.entry(n1, KindModelCalled, call(4, "count", initiator)),
		c.entry(n1, KindModelCalled, call(5, "count", initiator)),
		c.entry(n1, KindModelCalled, call(6, "count", initiator)),
	}, "replay: has its receipt", "ok", "unauthorized: spent its budget of 2")

	l := c.models()
	if len(l.Models) != 1 || l.Models[0].Calls != 2 || l.Models[0].Owner != pubText(orgA) || l.Models[0].Endpoints[0] != "https://127.0.0.1:7001" || len(l.Models[0].Entry) == 0 {
		t.Fatalf("models: %+v", l)
	}

	c.want([][]byte{
		c.entry(orgB, KindModelRevoked, model.Revocation{Name: "hospital-a/stats", Version: 1}),
		c.entry(orgA, KindModelRevoked, model.Revocation{Name: "hospital-a/stats", Version: 2}),
		c.entry(orgA, KindModelRevoked, model.Revocation{Name: "hospital-a/stats", Version: 1, Reason: "consent withdrawn"}),
	}, "unauthorized: belongs to", "missing_reference: not 2", "ok")
	c.want([][]byte{
		c.entry(orgA, KindModelRevoked, model.Revocation{Name: "hospital-a/stats", Version: 1}),
		c.entry(n1, KindModelCalled, call(7, "count", initiator)),
	}, "replay: was revoked", "unauthorized: was revoked")

	// A new version is live again, with its own budget.
	c.want([][]byte{c.entry(orgA, KindModelPublished, testModel("hospital-a/stats", 2, []ed25519.PrivateKey{n1}, initiator))}, "ok")
	v2 := call(8, "count", initiator)
	v2.Version = 2
	c.want([][]byte{c.entry(n1, KindModelCalled, v2)}, "ok")
	if l := c.models(); l.Models[0].Version != 2 || l.Models[0].Revoked != 0 || l.Models[0].Calls != 3 {
		t.Fatalf("models after v2: %+v", l.Models[0].ModelState)
	}
}

// Before version 7, model.published keeps its reserved form (any
// registered node) and the new kinds are unknown.
func TestModelsBeforeV7(t *testing.T) {
	t.Parallel()
	c := newACLChain(t, RulesV6)
	node := seedKey(0x72)
	c.want([][]byte{c.entry(node, KindNodeRegistered, nodeBody(node.Public().(ed25519.PublicKey)))}, "ok")
	c.want([][]byte{
		c.entry(node, KindModelPublished, map[string]any{"anything": 1}),
		c.entry(node, KindModelRevoked, model.Revocation{Name: "a/b", Version: 1}),
	}, "ok", "malformed: not one of the ledger's kinds")
}

// From version 14 a model may be in manual approval mode, and each of its
// receipts names the plan it was answered under; version 7 refuses both
// (TestModelsThroughTheStateMachine), and a receipt of an automatic
// model may name a plan too.
func TestModelPlansV14(t *testing.T) {
	t.Parallel()
	c := newACLChain(t, RulesV14)
	val, org, n1, initiator := seedKey(0x51), seedKey(0x62), seedKey(0x63), seedKey(0x64)
	c.want([][]byte{c.entry(val, KindMemberAdmitted, map[string]any{"member": pubText(org)})}, "ok")
	b := nodeBody(n1.Public().(ed25519.PublicKey))
	b["organisation"], b["endpoint"] = pubText(org), "https://127.0.0.1:7001"
	c.want([][]byte{c.entry(n1, KindNodeRegistered, b)}, "ok")
	m := testModel("hospital-a/stats", 1, []ed25519.PrivateKey{n1}, initiator)
	m.Approval.Mode = model.ApprovalManual
	c.want([][]byte{c.entry(org, KindModelPublished, m)}, "ok")
	call := model.Call{ID: strings.Repeat("a1", 32), Model: "hospital-a/stats", Version: 1, Function: "count",
		ArgsSHA256: strings.Repeat("cd", 32), ResultSHA256: strings.Repeat("ef", 32), Rows: 7, Caller: pubText(n1), Initiator: pubText(initiator)}
	planned := call
	planned.Plan = strings.Repeat("0f", 32)
	c.want([][]byte{c.entry(n1, KindModelCalled, call), c.entry(n1, KindModelCalled, planned)},
		"unauthorized: manual approval mode", "ok")
	if l := c.models(); l.Models[0].Mode != model.ApprovalManual || l.Models[0].Calls != 1 {
		t.Fatalf("models: %+v", l.Models[0].ModelState)
	}
}
