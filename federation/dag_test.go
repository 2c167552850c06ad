package federation_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/federation"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/policy"
)

// run is a session's run as its node gives it to host calls: the
// initiator its one result reader, the total model its one program and,
// when dag is not nil, the compute plan pinned as input DAGInput.
func (w *world) run(session string, dag []byte) (context.Context, node.RunInfo) {
	pol := &policy.Policy{Name: "workflow",
		Principals: []policy.Principal{{ID: "initiator", SigningKey: w.initiator, Roles: []policy.Role{policy.RoleProgramProvider, policy.RoleResultReader}}},
		Programs:   []policy.Program{{Name: "total.wasm", SHA256: strings.Repeat("ab", 32), Provider: "initiator"}}}
	if dag != nil {
		pol.Inputs = []policy.Input{{Name: federation.DAGInput, Provider: "initiator", SHA256: federation.DAGDigest(dag)}}
	}
	ri := node.RunInfo{Session: session, Policy: pol}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	w.t.Cleanup(cancel)
	return node.WithRunInfo(ctx, ri), ri
}

// hostCall makes the host call name from ctx's run with request v.
func (w *world) hostCall(ctx context.Context, name string, v any) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		b, _ = json.Marshal(v)
	}
	return w.caller.HostCalls()[name].Handle(ctx, b)
}

func wantErr(t *testing.T, err error, text string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), text) {
		t.Fatalf("want an error naming %q, got %v", text, err)
	}
}

var countAllReq = map[string]any{"model": "hospital-a/stats", "function": "count", "args": map[string]any{"column": "age", "op": ">=", "value": 0}}
var histReq = map[string]any{"model": "hospital-a/stats", "function": "histogram", "args": map[string]any{"column": "age", "edges": []int{0, 200}}}

// A run given a compute plan makes only the calls the plan lists, each
// once its predecessors are answered, and settles only once every task
// was made; its call graph — the plan's edges — is recorded on the
// ledger with each receipt. A run without a plan records the order its
// calls were made in.
func TestComputePlan(t *testing.T) {
	w := newWorld(t, 60)
	dag := []byte(`{"tasks":[{"name":"c1","model":"hospital-a/stats","function":"count"},` +
		`{"name":"h","model":"hospital-a/stats","function":"histogram","after":["c1"]},` +
		`{"name":"c2","model":"hospital-a/stats","function":"count","after":["h"]}]}`)
	const wf = "1111111111111111aaaaaaaaaaaaaaaa"
	ctx, ri := w.run(wf, dag)

	_, err := w.hostCall(ctx, federation.CallName, countAllReq)
	wantErr(t, err, "declares it (host call cloister.model.dag/v1) before its first call")
	_, err = w.hostCall(ctx, federation.DAGName, []byte(strings.Replace(string(dag), `"c2"`, `"c3"`, 1)))
	wantErr(t, err, "the run's policy pins")
	if _, err := w.hostCall(ctx, federation.DAGName, dag); err != nil {
		t.Fatal(err)
	}
	_, err = w.hostCall(ctx, federation.DAGName, dag)
	wantErr(t, err, "declared its compute plan already")

	_, err = w.hostCall(ctx, federation.CallName, histReq)
	wantErr(t, err, "h waits for c1")
	_, err = w.hostCall(ctx, federation.CallName, map[string]any{"model": "hospital-a/stats", "function": "evaluate", "args": map[string]any{"weights": []float64{0, 0, 0, 0}}})
	wantErr(t, err, "no open task")
	// In one batch, the histogram is not ready while c1 is being made.
	b, err := w.hostCall(ctx, federation.CallsName, map[string]any{"calls": []any{countAllReq, histReq}})
	if err != nil {
		t.Fatal(err)
	}
	var ba federation.BatchAnswer
	if err := json.Unmarshal(b, &ba); err != nil || ba.Answers[0].Error != "" || !strings.Contains(ba.Answers[1].Error, "h waits for c1") {
		t.Fatalf("batch: %s %v", b, err)
	}
	// The run cannot settle short of its plan.
	wantErr(t, w.caller.SettleRun(ctx, ri), "made 1 of its compute plan's 3 tasks; not made: h, c2")
	for _, r := range []any{histReq, countAllReq} {
		if _, err := w.hostCall(ctx, federation.CallName, r); err != nil {
			t.Fatal(err)
		}
	}
	_, err = w.hostCall(ctx, federation.CallName, countAllReq)
	wantErr(t, err, "no open task")
	if err := w.caller.SettleRun(ctx, ri); err != nil {
		t.Fatal(err)
	}
	rw, err := w.lc.Workflow(ctx, wf)
	if err != nil {
		t.Fatal(err)
	}
	r := rw.Record
	if r.DAG != federation.DAGDigest(dag) || r.Initiator != w.initiator || len(r.Calls) != 3 || rw.Node != protocol.FormatEd25519Key(w.callerNode.PlatformKey()) {
		t.Fatalf("record: %+v by %s", r, rw.Node)
	}
	for i, want := range []struct {
		task  string
		after []int
	}{{"c1", nil}, {"h", []int{0}}, {"c2", []int{1}}} {
		c := r.Calls[i]
		if c.Task != want.task || len(c.After) != len(want.after) || len(want.after) > 0 && c.After[0] != want.after[0] || c.Receipt == 0 {
			t.Fatalf("recorded call %d: %+v, want task %s after %v", i, c, want.task, want.after)
		}
	}
	if got, _ := w.caller.Workflow(wf); got.Record != rw.Index || got.DAG != r.DAG {
		t.Fatalf("node's workflow: record %d, dag %s", got.Record, got.DAG)
	}

	// A run given a plan that it never declares does not settle.
	ctx2, ri2 := w.run("2222222222222222aaaaaaaaaaaaaaaa", dag)
	wantErr(t, w.caller.SettleRun(ctx2, ri2), "did not declare it")

	// Without a plan: each host call's calls come after the previous one's.
	const wf3 = "3333333333333333aaaaaaaaaaaaaaaa"
	ctx3, ri3 := w.run(wf3, nil)
	_, err = w.hostCall(ctx3, federation.DAGName, dag)
	wantErr(t, err, "pins no input")
	if _, err := w.hostCall(ctx3, federation.CallName, countAllReq); err != nil {
		t.Fatal(err)
	}
	if _, err := w.hostCall(ctx3, federation.CallsName, map[string]any{"calls": []any{countAllReq, histReq}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.hostCall(ctx3, federation.CallName, countAllReq); err != nil {
		t.Fatal(err)
	}
	if err := w.caller.SettleRun(ctx3, ri3); err != nil {
		t.Fatal(err)
	}
	rw3, err := w.lc.Workflow(ctx3, wf3)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(rw3.Record.Calls))
	for i, c := range rw3.Record.Calls {
		b, _ := json.Marshal(c.After)
		got[i] = string(b)
	}
	if strings.Join(got, " ") != "null [0] [0] [1,2]" {
		t.Fatalf("recorded edges without a plan: %v", got)
	}
}
