package federation

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cloisterhq/cloister/ledger/model"
)

// Compute plans as DAGs (decision 0126). An initiator may run its total
// model under a compute plan: the sub-model calls it will make, as tasks
// — a name, a model and a function — each naming the tasks whose results
// feed it. 'cloister workflow run --dag FILE' gives the plan to the run
// as the input DAGInput, pinned by its SHA-256 in the session's policy;
// the total model declares it to its node (host call DAGName) before its
// first call. From then on the initiator's
// node makes only calls that fit a ready task — same model and function,
// not made yet, every task it comes after answered — and refuses the
// others, so the run follows the plan the initiator attested. Whether or
// not a plan was declared, the node records each run's call graph on the
// ledger (workflow.recorded) before its outputs are released.

// DAGName is the host call by which a total model declares its plan.
const DAGName = "cloister.model.dag/v1"

// DAGInput is the input under which a run is given its plan.
const DAGInput = "workflow.dag.json"

// Bounds on a plan: its tasks are at most the calls one workflow.recorded
// names, its edges few enough that the record stays one entry.
const (
	MaxDAGTasks = model.MaxRecordedCalls
	MaxDAGEdges = 2048
	maxDAGBytes = 256 << 10
)

// DAG is a compute plan: its tasks, each after the tasks listed before it
// that it names (so the graph is acyclic as written).
type DAG struct {
	Tasks []Task `json:"tasks"`
}

// Task is one sub-model call of a plan.
type Task struct {
	Name     string   `json:"name"`
	Model    string   `json:"model"`
	Function string   `json:"function"`
	After    []string `json:"after,omitempty"`
}

// ParseDAG reads and checks a plan: known fields only; 1 to MaxDAGTasks
// tasks with unique valid names, valid model and function names; each
// task after tasks listed before it, each named once; at most MaxDAGEdges
// edges in all.
func ParseDAG(b []byte) (*DAG, error) {
	if len(b) > maxDAGBytes {
		return nil, fmt.Errorf("compute plan: %d bytes, at most %d", len(b), maxDAGBytes)
	}
	var d DAG
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("compute plan: want {\"tasks\":[{\"name\",\"model\",\"function\",\"after\"}, …]}: %v", err)
	}
	if dec.More() {
		return nil, errors.New("compute plan: data after the object")
	}
	if len(d.Tasks) == 0 || len(d.Tasks) > MaxDAGTasks {
		return nil, fmt.Errorf("compute plan: %d tasks, want 1 to %d", len(d.Tasks), MaxDAGTasks)
	}
	seen := make(map[string]bool, len(d.Tasks))
	edges := 0
	for i, t := range d.Tasks {
		if err := model.CheckTaskName(t.Name); err != nil {
			return nil, fmt.Errorf("compute plan: task %d: %w", i, err)
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("compute plan: task %q is listed twice", t.Name)
		}
		if err := model.CheckName(t.Model); err != nil {
			return nil, fmt.Errorf("compute plan: task %q: %w", t.Name, err)
		}
		if err := model.CheckFunctionName(t.Function); err != nil {
			return nil, fmt.Errorf("compute plan: task %q: %w", t.Name, err)
		}
		for j, a := range t.After {
			if !seen[a] {
				return nil, fmt.Errorf("compute plan: task %q comes after %q, which is not a task listed before it", t.Name, a)
			}
			if slices.Contains(t.After[:j], a) {
				return nil, fmt.Errorf("compute plan: task %q names %q twice", t.Name, a)
			}
		}
		if edges += len(t.After); edges > MaxDAGEdges {
			return nil, fmt.Errorf("compute plan: more than %d edges", MaxDAGEdges)
		}
		seen[t.Name] = true
	}
	return &d, nil
}

// DAGDigest is the SHA-256 (hex) a policy pins a plan's bytes with.
func DAGDigest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// DeclaredDAG is DAGName's response.
type DeclaredDAG struct {
	SHA256 string `json:"sha256"`
	Tasks  int    `json:"tasks"`
}

// handleDAG takes a run's declaration of its plan: the bytes must be the
// input DAGInput its policy pins, declared once, before any call.
func (c *Caller) handleDAG(ctx context.Context, req []byte) ([]byte, error) {
	o, err := originOf(ctx)
	if err != nil {
		return nil, err
	}
	if o.DAG == "" {
		return nil, fmt.Errorf("federation: this run's policy pins no input %s: it was not given a compute plan", DAGInput)
	}
	if sum := DAGDigest(req); sum != o.DAG {
		return nil, fmt.Errorf("federation: the compute plan declared has SHA-256 %s; the run's policy pins %s for input %s", sum, o.DAG, DAGInput)
	}
	d, err := ParseDAG(req)
	if err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rs := c.run(o.Workflow)
	switch {
	case rs.dag != nil:
		return nil, errors.New("federation: this run declared its compute plan already")
	case len(rs.calls) > 0 || rs.inFlight > 0:
		return nil, errors.New("federation: a compute plan is declared before the run's first call")
	}
	rs.dag, rs.dagSum = d, o.DAG
	rs.task = make(map[string]int, len(d.Tasks))
	rs.state = make(map[string]taskState, len(d.Tasks))
	return json.Marshal(DeclaredDAG{SHA256: o.DAG, Tasks: len(d.Tasks)})
}

type taskState uint8

const (
	taskOpen taskState = iota
	taskBusy
	taskDone
)

// link is where a call sits in its run's graph: its plan's task and the
// positions of the calls it comes after.
type link struct {
	task  string
	after []int
}

// begin places a host call's requests in their run's graph before they
// are made: under a plan, each on a ready task (the one it names, or the
// first ready one of its model and function), or an error for it; with no
// plan, each after the calls the previous host call answered.
func (c *Caller) begin(o Origin, reqs []*Request) ([]link, []error, error) {
	links, errs := make([]link, len(reqs)), make([]error, len(reqs))
	if o.Workflow == "" {
		return links, errs, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rs := c.run(o.Workflow)
	if o.DAG != "" && rs.dag == nil {
		return nil, nil, fmt.Errorf("federation: this run was given a compute plan (input %s); it declares it (host call %s) before its first call", DAGInput, DAGName)
	}
	if n := len(rs.calls) + rs.inFlight + len(reqs); n > model.MaxRecordedCalls {
		return nil, nil, fmt.Errorf("federation: a workflow makes at most %d calls", model.MaxRecordedCalls)
	}
	for i, r := range reqs {
		if rs.dag == nil {
			links[i].after = slices.Clone(rs.last)
			continue
		}
		t, err := rs.ready(r)
		if err != nil {
			errs[i] = err
			continue
		}
		rs.state[t.Name] = taskBusy
		links[i].task = t.Name
		for _, a := range t.After {
			links[i].after = append(links[i].after, rs.task[a])
		}
		slices.Sort(links[i].after)
	}
	for _, e := range errs {
		if e == nil {
			rs.inFlight++
		}
	}
	return links, errs, nil
}

// ready returns the plan's task r may be made for.
func (rs *runState) ready(r *Request) (*Task, error) {
	var waiting []string
	for i := range rs.dag.Tasks {
		t := &rs.dag.Tasks[i]
		if t.Model != r.Model || t.Function != r.Function || r.Task != "" && t.Name != r.Task {
			continue
		}
		if rs.state[t.Name] != taskOpen {
			continue
		}
		var missing []string
		for _, a := range t.After {
			if rs.state[a] != taskDone {
				missing = append(missing, a)
			}
		}
		if len(missing) == 0 {
			return t, nil
		}
		waiting = append(waiting, fmt.Sprintf("%s waits for %s", t.Name, strings.Join(missing, ", ")))
	}
	what := r.Model + "." + r.Function
	if r.Task != "" {
		what = fmt.Sprintf("task %q (%s)", r.Task, what)
	}
	if len(waiting) > 0 {
		return nil, fmt.Errorf("federation: %s is not ready in the run's compute plan: %s", what, strings.Join(waiting, "; "))
	}
	return nil, fmt.Errorf("federation: %s is no open task of the run's compute plan (its tasks are made once each)", what)
}

// end notes a host call's outcome: the positions of the calls answered
// become what the next host call comes after; a plan's failed tasks are
// open again.
func (c *Caller) end(o Origin, links []link, errs []error, answered []int) {
	if o.Workflow == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rs := c.run(o.Workflow)
	for i, l := range links {
		if errs[i] != nil {
			continue
		}
		rs.inFlight--
		if l.task != "" && rs.state[l.task] == taskBusy {
			rs.state[l.task] = taskOpen
		}
	}
	if len(answered) > 0 {
		slices.Sort(answered)
		rs.last = answered
	}
}
