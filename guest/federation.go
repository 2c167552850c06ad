package guest

import (
	"context"
	"encoding/json"
	"fmt"
)

// ModelCall is the host call of federated sub-model calls: its request is
// {"model","function","args"}, its response a CallResult (the ABI is in
// docs/federation.md, for C and Rust programs).
const ModelCall = "cloister.model.call/v1"

// CallResult is a sub-model's answer: its result (valid under the
// function's published result schema), the rows it aggregates, and the
// ledger index of the call's receipt, signed by the holder's node.
type CallResult struct {
	Result  json.RawMessage `json:"result"`
	Rows    uint64          `json:"rows"`
	Receipt uint64          `json:"receipt"`
	Holder  string          `json:"holder"`
}

// Call calls function of the model published on the ledger as model
// ("organisation/name") with args (encoded as JSON), from a total model
// running in a node's session whose policy allows the host call
// ModelCall. The node resolves the model on the ledger, reaches a node
// that serves it, which runs it where its data is and answers with a
// result only this run's node can open. It blocks until the answer comes
// (the run's deadline still runs).
func Call(ctx context.Context, model, function string, args any) (*CallResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("guest: arguments of %s.%s: %w", model, function, err)
	}
	req, err := json.Marshal(struct {
		Model    string          `json:"model"`
		Function string          `json:"function"`
		Args     json.RawMessage `json:"args"`
	}{model, function, a})
	if err != nil {
		return nil, err
	}
	resp, err := HostCall(ModelCall, req)
	if err != nil {
		return nil, err
	}
	var r CallResult
	if err := json.Unmarshal(resp, &r); err != nil {
		return nil, fmt.Errorf("guest: answer of %s.%s: %w", model, function, err)
	}
	return &r, nil
}
