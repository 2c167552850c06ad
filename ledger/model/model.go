// Package model gives the bodies of federation's ledger entries (rule
// version 7 on): an organisation's computation model — the program's
// digest, the functions it exports with a JSON Schema for each function's
// parameters and result, the local datasets they read (names and schemas,
// never contents), its output rules and who may call it, and the nodes
// that serve it — its revocation, and the receipt of each call a holder's
// node answered. The state machine (package ledger) judges them; nodes,
// initiators and anyone auditing read them with these types, in their one
// form.
package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/acl"
)

// Entry kinds.
const (
	KindPublished = "model.published"
	KindRevoked   = "model.revoked"
	KindCalled    = "model.called"
)

// Approval modes.
const (
	// ApprovalAutomatic: the holder's node answers every call of a
	// principal on the allow-list that fits the published spec and the
	// output rules, without a person.
	ApprovalAutomatic = "automatic"
	// ApprovalManual (rule version 14 on): a principal on the allow-list
	// submits a plan to the holder's node, and a person of the owner
	// approves it (cloister approval grant); the node answers only calls
	// that fit an approved plan, and each receipt names its plan.
	ApprovalManual = "manual"
)

// Errors of a model's lookup.
var (
	ErrNotPublished = errors.New("no such model is published on the ledger")
	ErrRevoked      = errors.New("the model was revoked by its owner")
)

// Bounds on what one entry carries.
const (
	MaxNodes     = 8
	MaxFunctions = 32
	MaxDatasets  = 16
	MaxAllow     = 64
	MaxSchema    = 8 << 10 // bytes of one JSON Schema
	MaxTerms     = 1024
	maxNamePart  = 32
	maxFuncName  = 64
)

// Model is the body of model.published, signed by the owner organisation
// (a current consortium member): version Version of the model Name (the
// first version is 1, each later one the previous plus one, by the same
// owner) runs the program whose SHA-256 is ProgramSHA256 on the nodes
// Nodes (platform keys of nodes registered for the owner). The program
// stays with its owner's nodes; only its digest is public.
type Model struct {
	Name          string     `json:"name"`
	Version       uint64     `json:"version"`
	ProgramSHA256 string     `json:"program_sha256"`
	Nodes         []string   `json:"nodes"`
	Functions     []Function `json:"functions"`
	Datasets      []Dataset  `json:"datasets,omitempty"`
	Output        Output     `json:"output"`
	Approval      Approval   `json:"approval"`
	Terms         string     `json:"terms,omitempty"`
}

// Function is one exported function: the JSON Schemas (draft 2020-12) its
// parameters and its result must satisfy, and the datasets it reads.
type Function struct {
	Name     string          `json:"name"`
	Params   json.RawMessage `json:"params"`
	Result   json.RawMessage `json:"result"`
	Datasets []string        `json:"datasets,omitempty"`
}

// Dataset names one local dataset of the owner and the schema of its
// rows; its contents never leave the owner's nodes.
type Dataset struct {
	Name   string          `json:"name"`
	Schema json.RawMessage `json:"schema"`
}

// Output is the owner's output rules, enforced by its node before a
// result leaves it: every result reports the rows it aggregates, and a
// result over fewer than MinRows rows is refused; each initiator may make
// at most Budget calls of this version (0: no limit), counted on the
// ledger by the call receipts.
type Output struct {
	MinRows uint64 `json:"min_rows"`
	Budget  uint64 `json:"budget,omitempty"`
}

// Approval says who may call: the principals on Allow (their keys); with
// Mode ApprovalAutomatic without a person, with ApprovalManual under a
// plan a person of the owner approved.
type Approval struct {
	Mode  string   `json:"mode"`
	Allow []string `json:"allow"`
}

// Revocation is the body of model.revoked, signed by the owner: version
// Version of model Name is no longer served; later calls are refused.
type Revocation struct {
	Name    string `json:"name"`
	Version uint64 `json:"version"`
	Reason  string `json:"reason,omitempty"`
}

// Call is the body of model.called, signed by the holder's node that
// answered it: the receipt of one sub-task. ID is the caller's random
// name for the call (32 bytes, hex; a replayed call is refused by the
// holder and by the ledger); Caller the platform key of the node whose
// isolate called, Initiator the principal on whose behalf; ArgsSHA256
// and ResultSHA256 the digests of the exact arguments and of the result
// as sealed to the caller; Rows the rows the result aggregates. Workflow
// names the initiator's run (its session id) when it has one.
type Call struct {
	ID           string `json:"id"`
	Model        string `json:"model"`
	Version      uint64 `json:"version"`
	Function     string `json:"function"`
	ArgsSHA256   string `json:"args_sha256"`
	ResultSHA256 string `json:"result_sha256"`
	Rows         uint64 `json:"rows"`
	Caller       string `json:"caller"`
	Initiator    string `json:"initiator"`
	Workflow     string `json:"workflow,omitempty"`
	// Plan (rule version 14 on) is the id of the approved plan the call
	// was answered under (the SHA-256 of the initiator's signed plan);
	// required for a model in manual approval mode.
	Plan string `json:"plan,omitempty"`
}

// DecodeModel reads and checks a model.published body.
func DecodeModel(body []byte) (*Model, error) {
	var m Model
	if err := acl.Decode(KindPublished, body, &m); err != nil {
		return nil, err
	}
	return &m, m.Check()
}

// DecodeRevocation reads and checks a model.revoked body.
func DecodeRevocation(body []byte) (*Revocation, error) {
	var r Revocation
	if err := acl.Decode(KindRevoked, body, &r); err != nil {
		return nil, err
	}
	return &r, r.Check()
}

// DecodeCall reads and checks a model.called body.
func DecodeCall(body []byte) (*Call, error) {
	var c Call
	if err := acl.Decode(KindCalled, body, &c); err != nil {
		return nil, err
	}
	return &c, c.Check()
}

// Check checks m's shape. The schemas are checked to be JSON objects
// here; that they compile as JSON Schemas is checked by the publisher and
// by the holder's node before it answers a call (the ledger's validators
// compile no schemas).
func (m *Model) Check() error {
	if err := CheckName(m.Name); err != nil {
		return fmt.Errorf("model name: %w", err)
	}
	if m.Version == 0 {
		return errors.New("model version: want 1 or more")
	}
	if !isHex(m.ProgramSHA256, 64) {
		return errors.New("model program_sha256: want 64 lower-case hex digits")
	}
	if len(m.Nodes) == 0 || len(m.Nodes) > MaxNodes {
		return fmt.Errorf("model nodes: want 1 to %d node keys", MaxNodes)
	}
	if err := checkKeys("model nodes", m.Nodes); err != nil {
		return err
	}
	if len(m.Datasets) > MaxDatasets {
		return fmt.Errorf("model datasets: at most %d", MaxDatasets)
	}
	ds := make(map[string]bool, len(m.Datasets))
	for _, d := range m.Datasets {
		if err := CheckDatasetName(d.Name); err != nil {
			return fmt.Errorf("model dataset: %w", err)
		}
		if ds[d.Name] {
			return fmt.Errorf("model dataset %q: named twice", d.Name)
		}
		ds[d.Name] = true
		if err := checkSchema(d.Schema); err != nil {
			return fmt.Errorf("model dataset %q schema: %w", d.Name, err)
		}
	}
	if len(m.Functions) == 0 || len(m.Functions) > MaxFunctions {
		return fmt.Errorf("model functions: want 1 to %d", MaxFunctions)
	}
	fs := make(map[string]bool, len(m.Functions))
	for _, f := range m.Functions {
		if err := CheckFunctionName(f.Name); err != nil {
			return fmt.Errorf("model function: %w", err)
		}
		if fs[f.Name] {
			return fmt.Errorf("model function %q: named twice", f.Name)
		}
		fs[f.Name] = true
		if err := checkSchema(f.Params); err != nil {
			return fmt.Errorf("model function %q params: %w", f.Name, err)
		}
		if err := checkSchema(f.Result); err != nil {
			return fmt.Errorf("model function %q result: %w", f.Name, err)
		}
		seen := map[string]bool{}
		for _, d := range f.Datasets {
			if !ds[d] {
				return fmt.Errorf("model function %q reads dataset %q, which the model does not declare", f.Name, d)
			}
			if seen[d] {
				return fmt.Errorf("model function %q: dataset %q named twice", f.Name, d)
			}
			seen[d] = true
		}
	}
	if m.Output.MinRows == 0 {
		return errors.New("model output min_rows: want 1 or more (the fewest rows a result may aggregate)")
	}
	if m.Approval.Mode != ApprovalAutomatic && m.Approval.Mode != ApprovalManual {
		return fmt.Errorf("model approval mode %q: want %q (principals on the allow-list) or %q (plans a person approves)", m.Approval.Mode, ApprovalAutomatic, ApprovalManual)
	}
	if len(m.Approval.Allow) == 0 || len(m.Approval.Allow) > MaxAllow {
		return fmt.Errorf("model approval allow: want 1 to %d principal keys", MaxAllow)
	}
	if err := checkKeys("model approval allow", m.Approval.Allow); err != nil {
		return err
	}
	if len(m.Terms) > MaxTerms {
		return fmt.Errorf("model terms: at most %d bytes", MaxTerms)
	}
	return nil
}

// Function returns m's function name.
func (m *Model) Function(name string) (*Function, bool) {
	for i := range m.Functions {
		if m.Functions[i].Name == name {
			return &m.Functions[i], true
		}
	}
	return nil, false
}

// Allows says whether principal (a key in protocol form) may call m.
func (m *Model) Allows(principal string) bool {
	for _, a := range m.Approval.Allow {
		if a == principal {
			return true
		}
	}
	return false
}

// Serves says whether node (a platform key in protocol form) serves m.
func (m *Model) Serves(node string) bool {
	for _, n := range m.Nodes {
		if n == node {
			return true
		}
	}
	return false
}

// Check checks r's shape.
func (r *Revocation) Check() error {
	if err := CheckName(r.Name); err != nil {
		return fmt.Errorf("revocation name: %w", err)
	}
	if r.Version == 0 {
		return errors.New("revocation version: want 1 or more")
	}
	if len(r.Reason) > MaxTerms {
		return fmt.Errorf("revocation reason: at most %d bytes", MaxTerms)
	}
	return nil
}

// Check checks c's shape.
func (c *Call) Check() error {
	if !isHex(c.ID, 64) {
		return errors.New("call id: want 64 lower-case hex digits (32 random bytes)")
	}
	if err := CheckName(c.Model); err != nil {
		return fmt.Errorf("call model: %w", err)
	}
	if c.Version == 0 {
		return errors.New("call version: want 1 or more")
	}
	if err := CheckFunctionName(c.Function); err != nil {
		return fmt.Errorf("call function: %w", err)
	}
	if !isHex(c.ArgsSHA256, 64) || !isHex(c.ResultSHA256, 64) {
		return errors.New("call args_sha256, result_sha256: want 64 lower-case hex digits each")
	}
	if _, err := protocol.ParseEd25519Key(c.Caller); err != nil {
		return fmt.Errorf("call caller: %v", err)
	}
	if _, err := protocol.ParseEd25519Key(c.Initiator); err != nil {
		return fmt.Errorf("call initiator: %v", err)
	}
	if c.Workflow != "" && protocol.ValidSessionID(c.Workflow) != nil {
		return errors.New("call workflow: want a session id")
	}
	if c.Plan != "" && !isHex(c.Plan, 64) {
		return errors.New("call plan: want 64 lower-case hex digits (a plan's id)")
	}
	return nil
}

// CheckName checks a model's name: "organisation/model", each part 1 to
// 32 of a-z, 0-9 and '-'.
func CheckName(s string) error {
	org, name, ok := strings.Cut(s, "/")
	if !ok || !isPart(org) || !isPart(name) {
		return fmt.Errorf("%.80q: want \"organisation/model\", each part 1 to %d of a-z, 0-9 and '-'", s, maxNamePart)
	}
	return nil
}

// CheckFunctionName checks a function's name: 1 to 64 of a-z, 0-9, '_'
// and '-', starting with a letter.
func CheckFunctionName(s string) error {
	if s == "" || len(s) > maxFuncName || s[0] < 'a' || s[0] > 'z' || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") != "" {
		return fmt.Errorf("function %.80q: want 1 to %d of a-z, 0-9, '_' and '-', starting with a letter", s, maxFuncName)
	}
	return nil
}

// CheckDatasetName checks a dataset's name, which is also its file name
// under /input in the sub-model's isolate: 1 to 64 of a-z, 0-9, '_', '-'
// and '.', not starting with '.'.
func CheckDatasetName(s string) error {
	if s == "" || len(s) > maxFuncName || s[0] == '.' || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789_-.") != "" {
		return fmt.Errorf("dataset %.80q: want 1 to %d of a-z, 0-9, '_', '-' and '.', not starting with '.'", s, maxFuncName)
	}
	return nil
}

func isPart(s string) bool {
	return s != "" && len(s) <= maxNamePart && strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == ""
}

func checkKeys(what string, ks []string) error {
	seen := make(map[string]bool, len(ks))
	for _, k := range ks {
		if _, err := protocol.ParseEd25519Key(k); err != nil {
			return fmt.Errorf("%s: %v", what, err)
		}
		if seen[k] {
			return fmt.Errorf("%s: %.80s named twice", what, k)
		}
		seen[k] = true
	}
	return nil
}

// checkSchema checks that s is one JSON object of at most MaxSchema bytes.
func checkSchema(s json.RawMessage) error {
	t := bytes.TrimSpace(s)
	if len(t) == 0 || t[0] != '{' {
		return errors.New("want a JSON Schema (a JSON object)")
	}
	if len(t) > MaxSchema {
		return fmt.Errorf("%d bytes, limit %d", len(t), MaxSchema)
	}
	var v map[string]json.RawMessage
	if err := json.Unmarshal(t, &v); err != nil {
		return fmt.Errorf("want a JSON object: %v", err)
	}
	return nil
}

func isHex(s string, n int) bool {
	return len(s) == n && strings.Trim(s, "0123456789abcdef") == ""
}
