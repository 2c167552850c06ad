// Command hospital is a hospital's published sub-model in the federated
// example (docs/federation.md): it answers one call on the hospital's own
// patients, /input/patients.csv (id,age,bmi,systolic,smoker,outcome),
// which never leaves the hospital's node, with aggregates only.
//
// Input /input/call.json: {"function": NAME, "args": {...}}:
//
//	count      {"column","op","value"}: rows whose column compares so
//	           (op one of "<", "<=", ">", ">=", "==") → {"count"}
//	histogram  {"column","edges":[e0,…,ek]}: rows per bin [e_i, e_i+1)
//	           → {"counts":[…]}
//	gradient   {"weights":[5]}: the gradient and Hessian of the logistic
//	           log-likelihood at the weights → {"gradient","hessian","n"}
//	evaluate   {"weights":[5]}: rows the weights classify right
//	           → {"correct","n"}
//
// Output /output/result.json: {"rows": N, "result": {...}}. rows is the
// fewest patients any released number rests on (for a histogram, its
// smallest non-empty bin): the node refuses to release a result whose
// rows fall below the model's output rule (min_rows).
package main

import (
	"encoding/json"
	"fmt"

	"github.com/cloisterhq/cloister/guest"
	"github.com/cloisterhq/cloister/internal/fedexample"
)

type call struct {
	Function string          `json:"function"`
	Args     json.RawMessage `json:"args"`
}

type output struct {
	Rows   int `json:"rows"`
	Result any `json:"result"`
}

func main() {
	var c call
	if err := guest.ReadJSON("call.json", &c); err != nil {
		guest.Fail("call.json: %v", err)
	}
	f, err := guest.OpenInput("patients.csv")
	if err != nil {
		guest.Fail("patients.csv: %v", err)
	}
	rows, err := fedexample.Parse(f)
	f.Close()
	if err != nil {
		guest.Fail("patients.csv: %v", err)
	}
	out, err := answer(c, rows)
	if err != nil {
		guest.Fail("%s: %v", c.Function, err)
	}
	if err := guest.WriteJSON("result.json", out); err != nil {
		guest.Fail("%v", err)
	}
}

func answer(c call, rows []fedexample.Patient) (*output, error) {
	switch c.Function {
	case "count":
		var a struct {
			Column string  `json:"column"`
			Op     string  `json:"op"`
			Value  float64 `json:"value"`
		}
		if err := json.Unmarshal(c.Args, &a); err != nil {
			return nil, err
		}
		n := 0
		for i := range rows {
			v, ok := rows[i].Value(a.Column)
			if !ok {
				return nil, fmt.Errorf("no column %q", a.Column)
			}
			if compare(v, a.Op, a.Value) {
				n++
			}
		}
		return &output{Rows: n, Result: map[string]int{"count": n}}, nil
	case "histogram":
		var a struct {
			Column string    `json:"column"`
			Edges  []float64 `json:"edges"`
		}
		if err := json.Unmarshal(c.Args, &a); err != nil {
			return nil, err
		}
		if len(a.Edges) < 2 {
			return nil, fmt.Errorf("want at least 2 edges")
		}
		counts := make([]int, len(a.Edges)-1)
		for i := range rows {
			v, ok := rows[i].Value(a.Column)
			if !ok {
				return nil, fmt.Errorf("no column %q", a.Column)
			}
			for b := range counts {
				if v >= a.Edges[b] && v < a.Edges[b+1] {
					counts[b]++
					break
				}
			}
		}
		least := len(rows)
		for _, n := range counts {
			if n > 0 && n < least {
				least = n
			}
		}
		return &output{Rows: least, Result: map[string][]int{"counts": counts}}, nil
	case "gradient":
		w, err := weights(c.Args)
		if err != nil {
			return nil, err
		}
		s, err := fedexample.Compute(rows, w)
		if err != nil {
			return nil, err
		}
		return &output{Rows: s.N, Result: s}, nil
	case "evaluate":
		w, err := weights(c.Args)
		if err != nil {
			return nil, err
		}
		return &output{Rows: len(rows), Result: map[string]int{"correct": fedexample.Correct(rows, w), "n": len(rows)}}, nil
	}
	return nil, fmt.Errorf("no function %q", c.Function)
}

func weights(raw json.RawMessage) ([]float64, error) {
	var a struct {
		Weights []float64 `json:"weights"`
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, err
	}
	return a.Weights, nil
}

func compare(v float64, op string, x float64) bool {
	switch op {
	case "<":
		return v < x
	case "<=":
		return v <= x
	case ">":
		return v > x
	case ">=":
		return v >= x
	case "==":
		return v == x
	}
	return false
}
