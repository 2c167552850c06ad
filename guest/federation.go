package guest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// ModelCall is the host call of federated sub-model calls: its request is
// {"model","function","args"}, its response a CallResult (the ABI is in
// docs/federation.md, for C and Rust programs).
const ModelCall = "cloister.model.call/v1"

// ModelCalls is the host call of several independent sub-model calls at
// once (CallAll): its request is {"calls":[{"model","function","args"},
// …]} (1 to 16 calls), its response {"answers":[…]}, one per call in
// order, each a CallResult or {"error": REASON}.
const ModelCalls = "cloister.model.calls/v1"

// CallResult is a sub-model's answer: its result (valid under the
// function's published result schema), the rows it aggregates, the call's
// id and the holder node that signed its receipt. Receipt is the
// receipt's ledger index when already known (usually 0: the holder
// commits receipts in the background, and the run's outputs are released
// only once every receipt is on the ledger).
type CallResult struct {
	Result  json.RawMessage `json:"result"`
	Rows    uint64          `json:"rows"`
	Call    string          `json:"call"`
	Receipt uint64          `json:"receipt"`
	Holder  string          `json:"holder"`
}

// ModelRequest is one call of CallAll.
type ModelRequest struct {
	Model    string `json:"model"`
	Function string `json:"function"`
	Args     any    `json:"args"`
}

// CallAll makes independent calls at once: the node runs them
// concurrently, each where its data is, and returns when all have
// answered. The results are in the order of calls; if any call failed,
// the error names each failure (and the results of the others are still
// returned, nil for the failed ones).
func CallAll(ctx context.Context, calls []ModelRequest) ([]*CallResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	req, err := json.Marshal(struct {
		Calls []ModelRequest `json:"calls"`
	}{calls})
	if err != nil {
		return nil, fmt.Errorf("guest: arguments of a batch of calls: %w", err)
	}
	resp, err := HostCall(ModelCalls, req)
	if err != nil {
		return nil, err
	}
	var r struct {
		Answers []struct {
			CallResult
			Error string `json:"error"`
		} `json:"answers"`
	}
	if err := json.Unmarshal(resp, &r); err != nil || len(r.Answers) != len(calls) {
		return nil, fmt.Errorf("guest: answer of a batch of %d calls: %d answers (%v)", len(calls), len(r.Answers), err)
	}
	out := make([]*CallResult, len(calls))
	var failed []string
	for i, a := range r.Answers {
		if a.Error != "" {
			failed = append(failed, fmt.Sprintf("%s.%s: %s", calls[i].Model, calls[i].Function, a.Error))
			continue
		}
		cr := a.CallResult
		out[i] = &cr
	}
	if len(failed) > 0 {
		return out, fmt.Errorf("guest: %d of %d calls failed: %s", len(failed), len(calls), strings.Join(failed, "; "))
	}
	return out, nil
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
