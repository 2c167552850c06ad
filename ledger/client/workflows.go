package client

import (
	"context"
	"encoding/json"

	"github.com/cloisterhq/cloister/ledger/model"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// RecordedWorkflow is a workflow's workflow.recorded entry (rule version
// 15): its index, its signed bytes and its body, checked here — the
// signature, the kind, the body's shape and that it records the workflow
// asked for. The submitter is the initiator's node; that the entry is in
// the log is for the caller to prove (Verify with its index).
type RecordedWorkflow struct {
	Index  uint64          `json:"index"`
	Entry  json.RawMessage `json:"entry"`
	Node   string          `json:"node"` // the submitter: the initiator's node
	Record model.Workflow  `json:"record"`
}

// Workflow fetches the call graph recorded for workflow id.
func (c *Client) Workflow(ctx context.Context, id string) (*RecordedWorkflow, error) {
	b, err := c.do(ctx, "GET", "/v1/workflows/"+id, nil, nil, 2*verify.MaxEntryBytes, false)
	if err != nil {
		return nil, err
	}
	var raw struct {
		Height int64           `json:"height"`
		Index  uint64          `json:"index"`
		Entry  json.RawMessage `json:"entry"`
	}
	if err := decodeStrict(b, &raw); err != nil {
		return nil, malformed("workflow: %v", err)
	}
	se, err := verify.DecodeEntry(raw.Entry)
	if err != nil {
		return nil, malformed("workflow %s: %v", id, err)
	}
	if err := se.VerifySignature(); err != nil {
		return nil, malformed("workflow %s: %v", id, err)
	}
	if se.Entry.Kind != model.KindWorkflow {
		return nil, malformed("workflow %s: entry %d is a %s entry", id, raw.Index, se.Entry.Kind)
	}
	w, err := model.DecodeWorkflow(se.Entry.Body)
	if err != nil {
		return nil, malformed("workflow %s: %v", id, err)
	}
	if w.Workflow != id {
		return nil, malformed("workflow %s: entry %d records workflow %s", id, raw.Index, w.Workflow)
	}
	return &RecordedWorkflow{Index: raw.Index, Entry: raw.Entry, Node: se.Entry.Submitter, Record: *w}, nil
}
