package ledger

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/model"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Rule version 7: federation's kinds (package model gives their bodies,
// decision 0120):
//
//   - model.published, signed by an organisation (a current consortium
//     member), publishes version V of a model under a name the
//     organisation holds: the first version of a name is 1 and makes the
//     submitter its owner; each later version is the previous plus one,
//     by the owner. Every node that serves it is registered for the
//     owner (its node.registered names the owner as organisation);
//   - model.revoked, by the owner, ends the current version: calls after
//     it are refused (by the holder's node, and here: no receipt);
//   - model.called, signed by a node that serves the current, unrevoked
//     version, is the receipt of one answered call: its id is fresh, its
//     function published, its caller a registered node, its initiator on
//     the allow-list, and the initiator's calls of this version within
//     the model's budget.
//
// State (JSON records and counters):
//
//	models        model name -> ModelState
//	model_calls   call id (32) -> index of its model.called entry (8)
//	model_budget  sha256(name ‖ 0 ‖ be64(version) ‖ initiator key) -> calls (8)
var (
	bucketModels      = []byte("models")
	bucketModelCalls  = []byte("model_calls")
	bucketModelBudget = []byte("model_budget")
)

// ModelState is a model's state as the ledger keeps it and GET /v1/models
// serves it: its owner, its current version and the entry that published
// it, and the revocation of that version if any.
type ModelState struct {
	Name      string   `json:"name"`
	Owner     string   `json:"owner"`
	Version   uint64   `json:"version"`
	Index     uint64   `json:"index"`             // the model.published entry of Version
	Revoked   uint64   `json:"revoked,omitempty"` // the model.revoked entry, 0 while live
	Nodes     []string `json:"nodes"`
	Functions []string `json:"functions"`
	Allow     []string `json:"allow"`
	Budget    uint64   `json:"budget,omitempty"`
	// Mode is the approval mode when it is manual (rule version 14).
	Mode  string `json:"mode,omitempty"`
	Calls uint64 `json:"calls"` // receipts of all versions
}

// Rule version 14 (decision 0124) adds plans: a model may be published in
// manual approval mode, and a receipt of such a model must name the plan
// (its id) the owner's node answered it under. Version 7 refuses both.
func ruleModelPublished(c *ruleCtx) ([]write, *verify.RejectedError) { return modelPublished(c, false) }

func ruleModelPublishedV14(c *ruleCtx) ([]write, *verify.RejectedError) {
	return modelPublished(c, true)
}

func ruleModelCalled(c *ruleCtx) ([]write, *verify.RejectedError) { return modelCalled(c, false) }

func ruleModelCalledV14(c *ruleCtx) ([]write, *verify.RejectedError) { return modelCalled(c, true) }

func modelPublished(c *ruleCtx, plans bool) ([]write, *verify.RejectedError) {
	m, err := model.DecodeModel(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	if !plans && m.Approval.Mode != model.ApprovalAutomatic {
		return nil, reject(verify.CodeMalformed, "model.published: approval mode %q needs rule version %d", m.Approval.Mode, RulesV14)
	}
	if !isCurrentMember(c.v, c.pub) {
		return nil, reject(verify.CodeUnauthorized, "model.published: the submitter is not a consortium member; organisations publish models")
	}
	owner := protocol.FormatEd25519Key(c.pub)
	prev, had := getRecord[ModelState](c.v, bucketModels, []byte(m.Name))
	switch {
	case had && prev.Owner != owner:
		return nil, reject(verify.CodeUnauthorized, "model.published: model %s belongs to %s", m.Name, prev.Owner)
	case had && m.Version != prev.Version+1:
		return nil, reject(verify.CodeReplay, "model.published: model %s is at version %d; the next is %d", m.Name, prev.Version, prev.Version+1)
	case !had && m.Version != 1:
		return nil, reject(verify.CodeMissingReference, "model.published: model %s has no version yet; the first is 1", m.Name)
	}
	for _, n := range m.Nodes {
		pk, _ := protocol.ParseEd25519Key(n)
		if c.v.get(bucketNodes, pk) == nil {
			return nil, reject(verify.CodeMissingReference, "model.published: node %s is not registered", n)
		}
		if _, org := parseNodeInfo(c.v.get(bucketNodeInfo, pk)); !bytes.Equal(org, c.pub) {
			return nil, reject(verify.CodeUnauthorized, "model.published: node %s is not registered for organisation %s", n, owner)
		}
	}
	st := &ModelState{Name: m.Name, Owner: owner, Version: m.Version, Index: c.index, Nodes: m.Nodes,
		Allow: m.Approval.Allow, Budget: m.Output.Budget}
	if m.Approval.Mode == model.ApprovalManual {
		st.Mode = model.ApprovalManual
	}
	if had {
		st.Calls = prev.Calls
	}
	for _, f := range m.Functions {
		st.Functions = append(st.Functions, f.Name)
	}
	return []write{putRecord(bucketModels, []byte(m.Name), st)}, nil
}

func ruleModelRevoked(c *ruleCtx) ([]write, *verify.RejectedError) {
	r, err := model.DecodeRevocation(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	st, rej := c.model(r.Name)
	if rej != nil {
		return nil, rej
	}
	switch {
	case st.Owner != protocol.FormatEd25519Key(c.pub):
		return nil, reject(verify.CodeUnauthorized, "model.revoked: model %s belongs to %s", r.Name, st.Owner)
	case r.Version != st.Version:
		return nil, reject(verify.CodeMissingReference, "model.revoked: model %s is at version %d, not %d", r.Name, st.Version, r.Version)
	case st.Revoked != 0:
		return nil, reject(verify.CodeReplay, "model.revoked: version %d of model %s was revoked by entry %d", st.Version, r.Name, st.Revoked)
	}
	st.Revoked = c.index
	return []write{putRecord(bucketModels, []byte(r.Name), st)}, nil
}

func modelCalled(c *ruleCtx, plans bool) ([]write, *verify.RejectedError) {
	call, err := model.DecodeCall(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	if !plans && call.Plan != "" {
		return nil, reject(verify.CodeMalformed, "model.called: a receipt naming a plan needs rule version %d", RulesV14)
	}
	st, rej := c.model(call.Model)
	if rej != nil {
		return nil, rej
	}
	holder := protocol.FormatEd25519Key(c.pub)
	switch {
	case call.Version != st.Version:
		return nil, reject(verify.CodeMissingReference, "model.called: model %s is at version %d, not %d", call.Model, st.Version, call.Version)
	case st.Revoked != 0:
		return nil, reject(verify.CodeUnauthorized, "model.called: version %d of model %s was revoked by entry %d", st.Version, call.Model, st.Revoked)
	case !slices.Contains(st.Nodes, holder):
		return nil, reject(verify.CodeUnauthorized, "model.called: node %s does not serve model %s", holder, call.Model)
	case !slices.Contains(st.Functions, call.Function):
		return nil, reject(verify.CodeMissingReference, "model.called: model %s publishes no function %q", call.Model, call.Function)
	case !slices.Contains(st.Allow, call.Initiator):
		return nil, reject(verify.CodeUnauthorized, "model.called: initiator %s is not on model %s's allow-list", call.Initiator, call.Model)
	case st.Mode == model.ApprovalManual && call.Plan == "":
		return nil, reject(verify.CodeUnauthorized, "model.called: model %s is in manual approval mode; its receipts name the approved plan they were answered under", call.Model)
	}
	callerKey, _ := protocol.ParseEd25519Key(call.Caller)
	if c.v.get(bucketNodes, callerKey) == nil {
		return nil, reject(verify.CodeMissingReference, "model.called: caller %s is not a registered node", call.Caller)
	}
	id, _ := hex.DecodeString(call.ID)
	if prev := c.v.get(bucketModelCalls, id); prev != nil {
		i, _ := getU64(prev)
		return nil, reject(verify.CodeReplay, "model.called: call %s has its receipt in entry %d", call.ID, i)
	}
	bk := budgetKey(call.Model, call.Version, keyOf(call.Initiator))
	used, _ := getU64(c.v.get(bucketModelBudget, bk))
	if st.Budget != 0 && used >= st.Budget {
		return nil, reject(verify.CodeUnauthorized, "model.called: initiator %s spent its budget of %d calls of model %s version %d", call.Initiator, st.Budget, call.Model, call.Version)
	}
	st.Calls++
	return []write{
		{bucketModelCalls, id, be64(c.index)},
		{bucketModelBudget, bk, be64(used + 1)},
		putRecord(bucketModels, []byte(call.Model), st),
	}, nil
}

func keyOf(s string) ed25519.PublicKey {
	pk, _ := protocol.ParseEd25519Key(s)
	return pk
}

// budgetKey is the model_budget key of an initiator's calls of one
// version of a model.
func budgetKey(name string, version uint64, initiator ed25519.PublicKey) []byte {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write(be64(version))
	h.Write(initiator)
	return h.Sum(nil)
}

func (c *ruleCtx) model(name string) (*ModelState, *verify.RejectedError) {
	st, ok := getRecord[ModelState](c.v, bucketModels, []byte(name))
	if !ok {
		return nil, reject(verify.CodeMissingReference, "%s: no model %s is published", c.body.kind, name)
	}
	return st, nil
}

// ModelList is GET /v1/models: every model's state and the entry that
// published its current version (Entry), at the committed height.
type ModelList struct {
	Height int64         `json:"height"`
	Models []ListedModel `json:"models"`
}

// ListedModel is one model of a ModelList.
type ListedModel struct {
	ModelState
	Entry json.RawMessage `json:"entry"`
	// Endpoints are the serving nodes' endpoints, in Nodes' order ("" for
	// a node that named none).
	Endpoints []string `json:"endpoints"`
}

// maxModelsListed bounds GET /v1/models.
const maxModelsListed = 10000

func (ln *ledgerNode) handleModels(w http.ResponseWriter, _ *http.Request) {
	ln.read(w, func(w http.ResponseWriter, r reader, st committedState) error {
		writeJSON(w, http.StatusOK, listModels(r, st))
		return nil
	})
}

// listModels lists the models in the committed state st.
func listModels(r reader, st committedState) ModelList {
	out := ModelList{Height: st.Height, Models: []ListedModel{}}
	cur := r.tx.Bucket(bucketModels).Cursor()
	for k, v := cur.First(); k != nil && len(out.Models) < maxModelsListed; k, v = cur.Next() {
		var lm ListedModel
		if json.Unmarshal(v, &lm.ModelState) != nil || lm.Index >= st.Size {
			continue
		}
		_, tx, ok := r.entry(lm.Index)
		if !ok {
			continue
		}
		lm.Entry = bytes.Clone(tx)
		for _, n := range lm.Nodes {
			pk, _ := protocol.ParseEd25519Key(n)
			ep, _ := parseNodeInfo(r.get(bucketNodeInfo, pk))
			lm.Endpoints = append(lm.Endpoints, ep)
		}
		out.Models = append(out.Models, lm)
	}
	return out
}
