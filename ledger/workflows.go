package ledger

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"net/http"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/model"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Rule version 15 (decision 0126): workflow.recorded, the call graph of
// one workflow (package model gives its body), signed by a registered
// node — the initiator's — once every call it names has its receipt on
// the ledger. Each named call's model.called receipt is at the index
// given, was made by the submitting node for this workflow and this
// initiator; the graph's edges point to earlier calls (checked by the
// body's shape); a workflow is recorded once.
//
// State:
//
//	workflows  session id -> index of its workflow.recorded entry (8)
var bucketWorkflows = []byte("workflows")

// KindWorkflowRecorded is rule version 15's kind.
const KindWorkflowRecorded verify.Kind = model.KindWorkflow

func ruleWorkflowRecorded(c *ruleCtx) ([]write, *verify.RejectedError) {
	w, err := model.DecodeWorkflow(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	if rej := c.requireNode(); rej != nil {
		return nil, rej
	}
	if prev := c.v.get(bucketWorkflows, []byte(w.Workflow)); prev != nil {
		i, _ := getU64(prev)
		return nil, reject(verify.CodeReplay, "workflow.recorded: workflow %s was recorded by entry %d", w.Workflow, i)
	}
	caller := protocol.FormatEd25519Key(c.pub)
	for i, rc := range w.Calls {
		id, _ := hex.DecodeString(rc.Call)
		at, _ := getU64(c.v.get(bucketModelCalls, id))
		if at == 0 || at != rc.Receipt {
			return nil, reject(verify.CodeMissingReference, "workflow.recorded: call %d (%s) has no receipt at entry %d", i, rc.Call, rc.Receipt)
		}
		var rcpt model.Call
		readEntryBody(c.v, rc.Receipt, &rcpt)
		if rcpt.Caller != caller || rcpt.Workflow != w.Workflow || rcpt.Initiator != w.Initiator {
			return nil, reject(verify.CodeUnauthorized, "workflow.recorded: the receipt of call %d (entry %d) names another caller, workflow or initiator", i, rc.Receipt)
		}
	}
	return []write{{bucketWorkflows, []byte(w.Workflow), be64(c.index)}}, nil
}

// RecordedWorkflow is GET /v1/workflows/{id}: the index and signed entry
// of the workflow's workflow.recorded, at the committed height.
type RecordedWorkflow struct {
	Height int64           `json:"height"`
	Index  uint64          `json:"index"`
	Entry  json.RawMessage `json:"entry"`
}

func (ln *ledgerNode) handleWorkflow(w http.ResponseWriter, req *http.Request) {
	id := req.PathValue("id")
	if protocol.ValidSessionID(id) != nil {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "workflow id: want %d lower-case hex digits", 2*protocol.SessionIDSize)
		return
	}
	ln.read(w, func(w http.ResponseWriter, rd reader, st committedState) error {
		i, ok := getU64(rd.get(bucketWorkflows, []byte(id)))
		var tx []byte
		if ok && i < st.Size {
			_, tx, ok = rd.entry(i)
		}
		if !ok || i >= st.Size {
			writeError(w, http.StatusNotFound, verify.CodeNotFound, "no workflow %s is recorded", id)
			return nil
		}
		writeJSON(w, http.StatusOK, RecordedWorkflow{Height: st.Height, Index: i, Entry: bytes.Clone(tx)})
		return nil
	})
}
