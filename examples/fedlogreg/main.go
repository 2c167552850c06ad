// Command fedlogreg is the initiator's total model in the federated
// example (docs/federation.md): it trains a logistic regression over the
// patients of several hospitals without seeing one row. Each hospital
// publishes the sub-model examples/hospital; this program calls it on
// every hospital's node through the host call cloister.model.call/v1
// (guest.Call), adds the gradients and Hessians they return, and takes
// Newton steps — the same arithmetic a centralised fit does on the pooled
// rows (package internal/fedexample).
//
// Input /input/plan.json: {"models": ["org/model", …], "rounds": N,
// "histogram": {"column","edges"}}; optionally /input/workflow.dag.json,
// the compute plan of its calls, which it declares to its node first. Output /output/result.json: the
// coefficients, the accuracy over all hospitals' rows, the row and
// positive-case counts, the pooled histogram, and the id of every call
// (whose receipts 'cloister workflow status' lists). Each round's
// gradients, and the final evaluations, are asked of all hospitals at
// once (guest.CallAll): they run concurrently. When a call fails — the owner's node refused it,
// the model was revoked, no serving node answered — result.json holds
// only {"error": REASON}: no partial answer is reported as complete.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/cloisterhq/cloister/guest"
	"github.com/cloisterhq/cloister/internal/fedexample"
)

type plan struct {
	Models    []string `json:"models"`
	Rounds    int      `json:"rounds"`
	Histogram struct {
		Column string    `json:"column"`
		Edges  []float64 `json:"edges"`
	} `json:"histogram"`
}

type result struct {
	Coefficients []float64 `json:"coefficients"`
	Accuracy     float64   `json:"accuracy"`
	Rounds       int       `json:"rounds"`
	Rows         int       `json:"rows"`
	Positives    int       `json:"positives"`
	Histogram    []int     `json:"histogram"`
	Calls        []string  `json:"calls"`
}

// failed reports a failed call to the initiator in result.json, and
// ends the program.
func failed(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if err := guest.WriteJSON("result.json", map[string]string{"error": msg}); err != nil {
		guest.Fail("%s (and writing it: %v)", msg, err)
	}
	fmt.Println("fedlogreg: failed:", msg)
	os.Exit(0)
}

func main() {
	var p plan
	if err := guest.ReadJSON("plan.json", &p); err != nil {
		guest.Fail("plan.json: %v", err)
	}
	if len(p.Models) == 0 || p.Rounds < 1 {
		guest.Fail("plan.json: want models and rounds ≥ 1")
	}
	ctx := context.Background()
	// A run given a compute plan ('cloister workflow run --dag') declares
	// it first: its node then makes only the calls the plan lists, each
	// once its predecessors are answered.
	if err := declarePlan(); err != nil {
		failed("compute plan: %v", err)
	}
	var r result
	call := func(model, fn string, args, into any) {
		a, err := guest.Call(ctx, model, fn, args)
		if err != nil {
			failed("%s.%s: %v", model, fn, err)
		}
		if err := json.Unmarshal(a.Result, into); err != nil {
			guest.Fail("%s.%s: result: %v", model, fn, err)
		}
		r.Calls = append(r.Calls, a.Call)
	}
	// callAll asks fn of every model at once, with args; into(i) is where
	// model i's result goes.
	callAll := func(fn string, args any, into func(i int) any) {
		reqs := make([]guest.ModelRequest, len(p.Models))
		for i, m := range p.Models {
			reqs[i] = guest.ModelRequest{Model: m, Function: fn, Args: args}
		}
		as, err := guest.CallAll(ctx, reqs)
		if err != nil {
			failed("%v", err)
		}
		for i, a := range as {
			if err := json.Unmarshal(a.Result, into(i)); err != nil {
				guest.Fail("%s.%s: result: %v", p.Models[i], fn, err)
			}
			r.Calls = append(r.Calls, a.Call)
		}
	}
	r.Histogram = make([]int, len(p.Histogram.Edges)-1)
	for _, m := range p.Models {
		var c struct {
			Count int `json:"count"`
		}
		call(m, "count", map[string]any{"column": "outcome", "op": "==", "value": 1}, &c)
		r.Positives += c.Count
		var h struct {
			Counts []int `json:"counts"`
		}
		call(m, "histogram", p.Histogram, &h)
		for i := range h.Counts {
			if i < len(r.Histogram) {
				r.Histogram[i] += h.Counts[i]
			}
		}
	}
	w := make([]float64, fedexample.Features)
	for round := 0; round < p.Rounds; round++ {
		var pooled fedexample.Sums
		sums := make([]fedexample.Sums, len(p.Models))
		callAll("gradient", map[string]any{"weights": w}, func(i int) any { return &sums[i] })
		for i, s := range sums {
			if err := pooled.Add(s); err != nil {
				guest.Fail("%s.gradient: %v", p.Models[i], err)
			}
		}
		next, err := fedexample.Step(w, pooled)
		if err != nil {
			guest.Fail("round %d: %v", round+1, err)
		}
		w = next
		r.Rows = pooled.N
	}
	correct, n := 0, 0
	evals := make([]struct {
		Correct int `json:"correct"`
		N       int `json:"n"`
	}, len(p.Models))
	callAll("evaluate", map[string]any{"weights": w}, func(i int) any { return &evals[i] })
	for _, e := range evals {
		correct += e.Correct
		n += e.N
	}
	r.Coefficients, r.Rounds = w, p.Rounds
	if n > 0 {
		r.Accuracy = float64(correct) / float64(n)
	}
	if err := guest.WriteJSON("result.json", r); err != nil {
		guest.Fail("%v", err)
	}
	fmt.Printf("fedlogreg: %d hospitals, %d rows, %d rounds, accuracy %.4f, %d calls\n", len(p.Models), r.Rows, r.Rounds, r.Accuracy, len(r.Calls))
}

// planHostCall and planInput: a run given a compute plan reads it as
// /input/workflow.dag.json and declares it with the host call
// cloister.model.dag/v1, whose request is the plan's bytes
// (docs/federation.md, "The host calls' ABI").
const (
	planHostCall = "cloister.model.dag/v1"
	planInput    = "workflow.dag.json"
)

// declarePlan declares the run's compute plan, if it was given one.
func declarePlan() error {
	p, err := guest.InputPath(planInput)
	if err != nil {
		return err
	}
	if _, err := os.Stat(p); os.IsNotExist(err) {
		return nil
	}
	b, err := guest.ReadInput(planInput)
	if err != nil {
		return err
	}
	_, err = guest.HostCall(planHostCall, b)
	return err
}
