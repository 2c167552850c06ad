package model

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

const testKey = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="

func validModel() Model {
	return Model{Name: "hospital-a/stats", Version: 1, ProgramSHA256: strings.Repeat("ab", 32), Nodes: []string{testKey},
		Functions: []Function{{Name: "count", Params: json.RawMessage(`{"type":"object"}`), Result: json.RawMessage(`{"type":"object"}`), Datasets: []string{"patients.csv"}}},
		Datasets:  []Dataset{{Name: "patients.csv", Schema: json.RawMessage(`{"type":"object"}`)}},
		Output:    Output{MinRows: 5}, Approval: Approval{Mode: ApprovalAutomatic, Allow: []string{testKey}}}
}

// Each check refuses what it names; a valid model passes.
func TestModelCheck(t *testing.T) {
	m := validModel()
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		edit func(*Model)
		want string
	}{
		{func(m *Model) { m.Name = "stats" }, "organisation/model"},
		{func(m *Model) { m.Name = "a/b/c" }, "organisation/model"},
		{func(m *Model) { m.Version = 0 }, "version"},
		{func(m *Model) { m.ProgramSHA256 = "AB" }, "program_sha256"},
		{func(m *Model) { m.Nodes = nil }, "nodes"},
		{func(m *Model) { m.Nodes = []string{testKey, testKey} }, "twice"},
		{func(m *Model) { m.Functions[0].Datasets = []string{"other"} }, "does not declare"},
		{func(m *Model) { m.Functions[0].Params = json.RawMessage(`[1]`) }, "JSON Schema"},
		{func(m *Model) { m.Functions[0].Name = "Count" }, "function"},
		{func(m *Model) { m.Functions = append(m.Functions, m.Functions[0]) }, "twice"},
		{func(m *Model) { m.Datasets[0].Name = "../etc" }, "dataset"},
		{func(m *Model) { m.Output.MinRows = 0 }, "min_rows"},
		{func(m *Model) { m.Approval.Mode = "person" }, "approval mode"},
		{func(m *Model) { m.Approval.Allow = []string{"bob"} }, "allow"},
		{func(m *Model) { m.Terms = strings.Repeat("x", MaxTerms+1) }, "terms"},
	} {
		m := validModel()
		c.edit(&m)
		if err := m.Check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want an error naming %q, got %v", c.want, err)
		}
	}
}

// FuzzDecode feeds every body decoder arbitrary bytes: none panics, and a
// body one accepts encodes and decodes again to the same encoding.
func FuzzDecode(f *testing.F) {
	m := validModel()
	b, _ := json.Marshal(m)
	f.Add(b)
	f.Add([]byte(`{"name":"hospital-a/stats","version":1,"reason":"x"}`))
	f.Add([]byte(`{"id":"abababababababababababababababababababababababababababababababab","model":"a/b","version":1,"function":"count","args_sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","result_sha256":"efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef","rows":5,"caller":"` + testKey + `","initiator":"` + testKey + `"}`))
	f.Add([]byte(`{"workflow":"0123456789abcdef0123456789abcdef","initiator":"` + testKey + `","dag_sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","calls":[{"call":"abababababababababababababababababababababababababababababababab","receipt":3,"task":"a"},{"call":"efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef","receipt":4,"task":"b","after":[0]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		roundTrip(t, b, DecodeModel)
		roundTrip(t, b, DecodeRevocation)
		roundTrip(t, b, DecodeCall)
		roundTrip(t, b, DecodeWorkflow)
	})
}

func roundTrip[T any](t *testing.T, b []byte, dec func([]byte) (*T, error)) {
	v, err := dec(b)
	if err != nil {
		return
	}
	once, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	w, err := dec(once)
	if err != nil {
		t.Fatalf("%s decoded, encoded as %s, which does not decode: %v", b, once, err)
	}
	twice, _ := json.Marshal(w)
	if !bytes.Equal(once, twice) {
		t.Fatalf("%s: encodings differ: %s and %s", b, once, twice)
	}
}
