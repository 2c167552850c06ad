package federation

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// CallName is the host call a total model makes to call a sub-model
// (guest.Call); its request is a Request, its response an Answer.
const CallName = "cloister.model.call/v1"

// CallsName is the host call a total model makes to call several
// sub-models at once (guest.CallAll): its request is a Batch, its
// response a BatchAnswer; the calls run concurrently.
const CallsName = "cloister.model.calls/v1"

// MaxBatch bounds the calls of one CallsName request.
const MaxBatch = 16

// Batch is CallsName's request: independent calls, run concurrently.
type Batch struct {
	Calls []Request `json:"calls"`
}

// BatchAnswer is CallsName's response: one item per call, in the
// request's order, each an Answer or an Error.
type BatchAnswer struct {
	Answers []BatchItem `json:"answers"`
}

// BatchItem is one call's outcome in a BatchAnswer.
type BatchItem struct {
	Answer
	Error string `json:"error,omitempty"`
}

// Paths of the services a node with federation serves beside its API.
const (
	PathCall    = "/v1/federation/call"
	PathModels  = "/v1/federation/models"
	PathDataset = "/v1/federation/datasets"
	PathInfo    = "/v1/federation/info"
	// PathWorkflows+ID: the receipts of a workflow's calls, on the
	// initiator's node.
	PathWorkflows = "/v1/federation/workflows/"
)

// Kinds of the signed messages exchanged off the ledger, in the ledger's
// one signed form (package verify): the ledger itself refuses them.
const (
	KindCall    = "federation.call"
	KindDataset = "federation.dataset"
)

// Limits.
const (
	MaxArgs       = 256 << 10 // bytes of one call's arguments
	MaxResult     = 1 << 20   // bytes of one call's result
	MaxProgram    = 64 << 20  // bytes of a published program
	MaxDataset    = 1 << 30   // bytes of one local dataset
	maxAnswer     = MaxResult + 64<<10
	maxSealedJSON = 2*MaxResult + 256<<10
	// MaxSkew bounds how far a signed message's time may lie from the
	// receiver's clock.
	MaxSkew = 2 * time.Minute
)

// Request is what a total model asks for through CallName: call Function
// of the model Model with Args (JSON).
type Request struct {
	Model    string          `json:"model"`
	Function string          `json:"function"`
	Args     json.RawMessage `json:"args"`
	// Task, under a compute plan, names the plan's task the call is made
	// for (optional: the first ready task of the model and function).
	Task string `json:"task,omitempty"`
}

// Answer is the host call's response: the sub-model's Result (valid under
// the published result schema), the Rows it aggregates, the Call's id and
// the holder node that signed its model.called receipt. Receipt is the
// receipt's index on the ledger when it is known; the holder commits
// receipts in the background (decision 0125), so it is usually 0 here,
// and the run's outputs are released only once every receipt is on the
// ledger ('cloister workflow status' lists their indices).
type Answer struct {
	Result  json.RawMessage `json:"result"`
	Rows    uint64          `json:"rows"`
	Call    string          `json:"call"`
	Receipt uint64          `json:"receipt"`
	Holder  string          `json:"holder"`
}

// Call is the body of a federation.call message, signed by the calling
// node's platform key: the exact call, bound to the holder it is meant
// for (its platform key and the SHA-256 of the TLS certificate the
// caller verified), with the caller's one-time HPKE key the result is
// sealed to.
type Call struct {
	ID         string          `json:"id"`
	Model      string          `json:"model"`
	Version    uint64          `json:"version"`
	Function   string          `json:"function"`
	Args       json.RawMessage `json:"args"`
	ArgsSHA256 string          `json:"args_sha256"`
	Initiator  string          `json:"initiator"`
	Workflow   string          `json:"workflow,omitempty"`
	// Total is the SHA-256 of the calling session's program, the total
	// model (when the session has one program): plans approve calls of
	// one total model.
	Total      string `json:"total_sha256,omitempty"`
	Holder     string `json:"holder"`
	HolderCert string `json:"holder_cert"`
	ReplyKey   []byte `json:"reply_key"`
}

// Reply is the holder's answer to a call: the result sealed to the
// call's reply key and the model.called receipt (the signed entry; its
// index on the ledger is asked later at PathReceipts, and set here only
// when known).
type Reply struct {
	Sealed  []byte          `json:"sealed"`
	Receipt uint64          `json:"receipt"`
	Entry   json.RawMessage `json:"entry"`
}

// Dataset is the body of a federation.dataset message, signed by the
// owner organisation: store the Size bytes that follow, whose SHA-256 is
// SHA256, as the local dataset Name.
type Dataset struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Info is what PathInfo tells about the node.
type Info struct {
	PlatformKey  string `json:"platform_key"`
	Organisation string `json:"organisation,omitempty"`
	// ModelVersion, asked for with ?model=NAME, is that model's current
	// version on the node's ledger (0: not published).
	ModelVersion uint64 `json:"model_version,omitempty"`
}

// sealedResult is the plaintext sealed to the caller.
type sealedResult struct {
	Result json.RawMessage `json:"result"`
	Rows   uint64          `json:"rows"`
}

// resultInfo is the HPKE info of sealed results; the call's id is the
// associated data, so a result sealed for one call opens for no other.
var resultInfo = []byte("cloister federation result v1")

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// frame writes a signed message and the bytes that follow it:
// be32(len(entry)) ‖ entry ‖ data.
func frame(se *verify.SignedEntry) []byte {
	tx := se.Encode()
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(tx))), tx...)
}

// readSigned reads a framed signed message of kind from r, checks its
// signature and time, and decodes its body into v.
func readSigned(r io.Reader, kind string, v any, now time.Time) (*verify.SignedEntry, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	size := binary.BigEndian.Uint32(n[:])
	if size == 0 || size > verify.MaxEntryBytes {
		return nil, fmt.Errorf("request: signed message of %d bytes, limit %d", size, verify.MaxEntryBytes)
	}
	tx := make([]byte, size)
	if _, err := io.ReadFull(r, tx); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	return openSigned(tx, kind, v, now)
}

func openSigned(tx []byte, kind string, v any, now time.Time) (*verify.SignedEntry, error) {
	se, err := verify.DecodeEntry(tx)
	if err != nil {
		return nil, err
	}
	if err := se.VerifySignature(); err != nil {
		return nil, err
	}
	if string(se.Entry.Kind) != kind {
		return nil, fmt.Errorf("a %s message, want %s", se.Entry.Kind, kind)
	}
	if d := now.Sub(se.Entry.ParsedTime()); d > MaxSkew || d < -MaxSkew {
		return nil, fmt.Errorf("the message's time %s is more than %s from this node's %s", se.Entry.Time, MaxSkew, verify.FormatTime(now))
	}
	if err := acl.Decode(kind, se.Entry.Body, v); err != nil {
		return nil, err
	}
	return se, nil
}

// errorBody is the JSON of a refusal.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// Refusal codes a holder answers with.
const (
	CodeBadRequest  = "bad_request" // the request is malformed or its signature fails
	CodeNotServed   = "not_served"  // the model is not published, revoked, or not served here
	CodeNotAllowed  = "not_allowed" // the initiator is not on the allow-list, or the ledger refused the receipt (budget, replay)
	CodeSchema      = "schema"      // the arguments (or the result) do not satisfy the published schema
	CodeOutputRule  = "output_rule" // the result aggregates fewer rows than the output rule allows
	CodeFailed      = "failed"      // the sub-model failed
	CodeUnavailable = "unavailable" // the holder is busy or its ledger unreachable
)

// RefusedError is a holder's refusal of a call.
type RefusedError struct {
	Code    string
	Message string
}

func (e *RefusedError) Error() string { return e.Message }

var errNoInitiator = errors.New("federation: the calling session's policy must have exactly one result reader (the initiator)")
