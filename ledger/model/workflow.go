package model

import (
	"errors"
	"fmt"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/acl"
)

// KindWorkflow (rule version 15 on) is the call graph of one workflow,
// recorded by the initiator's node once every call's receipt is on the
// ledger and before the run's outputs are released: which calls were
// made, each with its model.called receipt, and which calls' results
// each one could depend on.
const KindWorkflow = "workflow.recorded"

// MaxRecordedCalls bounds the calls one workflow.recorded entry names.
const MaxRecordedCalls = 1024

// maxTaskName bounds a task's name.
const maxTaskName = 64

// Workflow is the body of workflow.recorded, signed by the initiator's
// node (the caller of every call it names). Workflow is the run's session
// id, Initiator its one result reader, Total the SHA-256 of its total
// model, DAG the SHA-256 of the compute plan it was run under (absent
// when it declared none). Calls are in the order they were made.
type Workflow struct {
	Workflow  string         `json:"workflow"`
	Initiator string         `json:"initiator"`
	Total     string         `json:"total_sha256,omitempty"`
	DAG       string         `json:"dag_sha256,omitempty"`
	Calls     []RecordedCall `json:"calls"`
}

// RecordedCall is one call of a workflow: its id and the index of its
// model.called receipt, the plan's task it was made for (with a DAG), and
// After, the positions in Calls of the calls it depends on — under a DAG
// the task's declared predecessors, without one the calls whose answers
// the total model had received when it made this one (the previous host
// call's). Each position is earlier than the call's own, in increasing
// order, so the graph is acyclic by construction.
type RecordedCall struct {
	Call    string `json:"call"`
	Receipt uint64 `json:"receipt"`
	Task    string `json:"task,omitempty"`
	After   []int  `json:"after,omitempty"`
}

// DecodeWorkflow reads and checks a workflow.recorded body.
func DecodeWorkflow(body []byte) (*Workflow, error) {
	var w Workflow
	if err := acl.Decode(KindWorkflow, body, &w); err != nil {
		return nil, err
	}
	return &w, w.Check()
}

// Check checks w's shape: ids, keys and digests in their forms, at most
// MaxRecordedCalls calls, each named once, task names unique, and every
// edge pointing to an earlier call.
func (w *Workflow) Check() error {
	if protocol.ValidSessionID(w.Workflow) != nil {
		return errors.New("workflow: want a session id")
	}
	if _, err := protocol.ParseEd25519Key(w.Initiator); err != nil {
		return fmt.Errorf("workflow initiator: %v", err)
	}
	if w.Total != "" && !isHex(w.Total, 64) || w.DAG != "" && !isHex(w.DAG, 64) {
		return errors.New("workflow total_sha256, dag_sha256: want 64 lower-case hex digits each")
	}
	if len(w.Calls) == 0 || len(w.Calls) > MaxRecordedCalls {
		return fmt.Errorf("workflow calls: want 1 to %d", MaxRecordedCalls)
	}
	calls := make(map[string]bool, len(w.Calls))
	tasks := map[string]bool{}
	for i, c := range w.Calls {
		if !isHex(c.Call, 64) {
			return fmt.Errorf("workflow call %d: want a call id of 64 lower-case hex digits", i)
		}
		if calls[c.Call] {
			return fmt.Errorf("workflow call %d: call %s is named twice", i, c.Call)
		}
		calls[c.Call] = true
		if c.Receipt == 0 {
			return fmt.Errorf("workflow call %d: want the index of its receipt", i)
		}
		if c.Task != "" {
			if err := CheckTaskName(c.Task); err != nil {
				return fmt.Errorf("workflow call %d: %w", i, err)
			}
			if tasks[c.Task] {
				return fmt.Errorf("workflow call %d: task %q is named twice", i, c.Task)
			}
			tasks[c.Task] = true
		}
		prev := -1
		for _, a := range c.After {
			if a <= prev || a >= i {
				return fmt.Errorf("workflow call %d: after: want earlier calls' positions in increasing order", i)
			}
			prev = a
		}
	}
	return nil
}

// CheckTaskName checks a compute plan's task name: 1 to 64 of a-z, A-Z,
// 0-9, '-', '_' and '.'.
func CheckTaskName(s string) error {
	if len(s) == 0 || len(s) > maxTaskName {
		return fmt.Errorf("task name %q: want 1 to %d characters", s, maxTaskName)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("task name %q: want a-z, A-Z, 0-9, '-', '_' and '.'", s)
		}
	}
	return nil
}
