package ledger

import (
	"crypto/ed25519"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/ledger/model"
)

// From version 15 the initiator's node records a workflow's call graph:
// once, naming each call's committed receipt, which it made for this
// workflow and initiator; edges point to earlier calls. Version 14 does
// not know the kind.
func TestWorkflowRecordedV15(t *testing.T) {
	t.Parallel()
	c := newACLChain(t, RulesV15)
	val, org, holder, caller, other := seedKey(0x51), seedKey(0x91), seedKey(0x93), seedKey(0x94), seedKey(0x95)
	initiator, stranger := seedKey(0x96), seedKey(0x97)
	c.want([][]byte{c.entry(val, KindMemberAdmitted, map[string]any{"member": pubText(org)})}, "ok")
	reg := func(k ed25519.PrivateKey) []byte {
		b := nodeBody(k.Public().(ed25519.PublicKey))
		b["organisation"], b["endpoint"] = pubText(org), "https://127.0.0.1:7001"
		return c.entry(k, KindNodeRegistered, b)
	}
	c.want([][]byte{reg(holder), reg(caller), reg(other)}, "ok", "ok", "ok")
	c.want([][]byte{c.entry(org, KindModelPublished, testModel("hospital-a/stats", 1, []ed25519.PrivateKey{holder}, initiator))}, "ok")
	const wf, wf2 = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
	call := func(id byte, workflow string, from ed25519.PrivateKey) model.Call {
		return model.Call{ID: strings.Repeat(hex.EncodeToString([]byte{id}), 32), Model: "hospital-a/stats", Version: 1, Function: "count",
			ArgsSHA256: strings.Repeat("cd", 32), ResultSHA256: strings.Repeat("ef", 32), Rows: 7,
			Caller: pubText(from), Initiator: pubText(initiator), Workflow: workflow}
	}
	c.want([][]byte{
		c.entry(holder, KindModelCalled, call(1, wf, caller)),
		c.entry(holder, KindModelCalled, call(2, wf2, caller)),
	}, "ok", "ok")
	receipt := func(id byte) uint64 {
		var i uint64
		c.a.store.view(func(r reader) error {
			i, _ = getU64(r.get(bucketModelCalls, []byte(strings.Repeat(string([]byte{id}), 32))))
			return nil
		})
		if i == 0 {
			t.Fatalf("no receipt of call %d", id)
		}
		return i
	}
	r1, r2 := receipt(1), receipt(2)
	rec := func(workflow string, calls ...model.RecordedCall) model.Workflow {
		return model.Workflow{Workflow: workflow, Initiator: pubText(initiator), Calls: calls}
	}
	c1 := model.RecordedCall{Call: call(1, wf, caller).ID, Receipt: r1, Task: "count-a"}
	c2 := model.RecordedCall{Call: call(2, wf2, caller).ID, Receipt: r2}
	backwards := rec(wf, c1, model.RecordedCall{Call: strings.Repeat("07", 32), Receipt: r1, After: []int{1}})
	c.want([][]byte{
		c.entry(stranger, KindWorkflowRecorded, rec(wf, c1)),
		c.entry(caller, KindWorkflowRecorded, rec(wf, c1, c2)),
		c.entry(other, KindWorkflowRecorded, rec(wf, c1)),
		c.entry(caller, KindWorkflowRecorded, rec(wf, model.RecordedCall{Call: c1.Call, Receipt: r2})),
		c.entry(caller, KindWorkflowRecorded, backwards),
		c.entry(caller, KindWorkflowRecorded, rec(wf, c1)),
	}, "unauthorized: registered nodes", "unauthorized: names another caller, workflow or initiator",
		"unauthorized: names another caller, workflow or initiator", "missing_reference: has no receipt at entry",
		"malformed: after: want earlier calls", "ok")
	c.want([][]byte{
		c.entry(caller, KindWorkflowRecorded, rec(wf, c1)),
		c.entry(caller, KindWorkflowRecorded, rec(wf2, c2, model.RecordedCall{Call: strings.Repeat("09", 32), Receipt: r2, After: []int{0}})),
		c.entry(caller, KindWorkflowRecorded, rec(wf2, c2)),
	}, "replay: was recorded by entry", "missing_reference: has no receipt", "ok")

	old := newACLChain(t, RulesV14)
	c1.Receipt = 3
	old.want([][]byte{old.entry(val, KindWorkflowRecorded, rec(wf, c1))}, "malformed: not one of the ledger's kinds")
}
