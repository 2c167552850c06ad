// Package fedmodel is the published model of the federated example's
// hospitals (examples/hospital): its functions with their JSON Schemas,
// its dataset and its output rule. `cloister demo federation` and the
// tests publish it; docs/federation.md shows it.
package fedmodel

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/cloisterhq/cloister/ledger/model"
)

// MinRows is the hospitals' output rule: no released number rests on
// fewer patients.
const MinRows = 5

const column = `{"enum":["age","bmi","systolic","smoker","outcome"]}`

const weights = `{"type":"object","properties":{"weights":{"type":"array","items":{"type":"number"},"minItems":5,"maxItems":5}},"required":["weights"],"additionalProperties":false}`

// Hospital returns version version of the hospital model name, running
// program on nodes, callable by allow.
func Hospital(name string, version uint64, program []byte, nodes []string, allow ...string) model.Model {
	sum := sha256.Sum256(program)
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	return model.Model{
		Name: name, Version: version, ProgramSHA256: hex.EncodeToString(sum[:]), Nodes: nodes,
		Functions: []model.Function{
			{Name: "count", Datasets: []string{"patients.csv"},
				Params: raw(`{"type":"object","properties":{"column":` + column + `,"op":{"enum":["<","<=",">",">=","=="]},"value":{"type":"number"}},"required":["column","op","value"],"additionalProperties":false}`),
				Result: raw(`{"type":"object","properties":{"count":{"type":"integer","minimum":0}},"required":["count"],"additionalProperties":false}`)},
			{Name: "histogram", Datasets: []string{"patients.csv"},
				Params: raw(`{"type":"object","properties":{"column":` + column + `,"edges":{"type":"array","items":{"type":"number"},"minItems":2,"maxItems":21}},"required":["column","edges"],"additionalProperties":false}`),
				Result: raw(`{"type":"object","properties":{"counts":{"type":"array","items":{"type":"integer","minimum":0}}},"required":["counts"],"additionalProperties":false}`)},
			{Name: "gradient", Datasets: []string{"patients.csv"}, Params: raw(weights),
				Result: raw(`{"type":"object","properties":{"gradient":{"type":"array","items":{"type":"number"},"minItems":5,"maxItems":5},"hessian":{"type":"array","items":{"type":"number"},"minItems":15,"maxItems":15},"n":{"type":"integer"}},"required":["gradient","hessian","n"],"additionalProperties":false}`)},
			{Name: "evaluate", Datasets: []string{"patients.csv"}, Params: raw(weights),
				Result: raw(`{"type":"object","properties":{"correct":{"type":"integer"},"n":{"type":"integer"}},"required":["correct","n"],"additionalProperties":false}`)},
		},
		Datasets: []model.Dataset{{Name: "patients.csv",
			Schema: raw(`{"type":"object","properties":{"id":{"type":"string"},"age":{"type":"number"},"bmi":{"type":"number"},"systolic":{"type":"number"},"smoker":{"enum":[0,1]},"outcome":{"enum":[0,1]}}}`)}},
		Output:   model.Output{MinRows: MinRows},
		Approval: model.Approval{Mode: model.ApprovalAutomatic, Allow: allow},
		Terms:    "aggregates only; no row leaves the hospital",
	}
}
