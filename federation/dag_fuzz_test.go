package federation_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"

	"github.com/cloisterhq/cloister/federation"
)

// FuzzParseDAG feeds the compute-plan parser arbitrary bytes (a plan is
// the initiator's, but the node reads it from a session input): nothing
// panics, an accepted plan keeps the promises ParseDAG makes (bounded,
// names unique, each edge to a task listed earlier), and it encodes and
// parses again to the same plan.
func FuzzParseDAG(f *testing.F) {
	f.Add([]byte(`{"tasks":[{"name":"a","model":"hospital-a/stats","function":"count"},{"name":"b","model":"hospital-b/stats","function":"mean","after":["a"]}]}`))
	f.Add([]byte(`{"tasks":[{"name":"a","model":"m/x","function":"f","after":["a"]}]}`))
	f.Add([]byte(`{"tasks":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := federation.ParseDAG(b)
		if err != nil {
			return
		}
		if len(d.Tasks) == 0 || len(d.Tasks) > federation.MaxDAGTasks {
			t.Fatalf("accepted %d tasks", len(d.Tasks))
		}
		edges := 0
		for i, task := range d.Tasks {
			for _, a := range task.After {
				if !slices.ContainsFunc(d.Tasks[:i], func(e federation.Task) bool { return e.Name == a }) {
					t.Fatalf("task %q accepted after %q, not listed before it", task.Name, a)
				}
			}
			edges += len(task.After)
			if slices.ContainsFunc(d.Tasks[:i], func(e federation.Task) bool { return e.Name == task.Name }) {
				t.Fatalf("task %q accepted twice", task.Name)
			}
		}
		if edges > federation.MaxDAGEdges {
			t.Fatalf("accepted %d edges", edges)
		}
		again, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		d2, err := federation.ParseDAG(again)
		if err != nil {
			t.Fatalf("%s parsed, encoded as %s, which does not parse: %v", b, again, err)
		}
		if !reflect.DeepEqual(d, d2) {
			t.Fatalf("%s: parsed twice to different plans", b)
		}
	})
}
