// Package deal gives the bodies of the marketplace's ledger entries (rule
// version 5 on): a consumer's request, a dispatcher's assignment of it to
// a provider under a fencing token, the failure of an assignment
// (failover), and the accounting of a finished run. The state machine
// (package ledger) judges them; dispatchers, consumers and anyone
// auditing read them with these types, in their one form.
package deal

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/acl"
)

// Entry kinds.
const (
	KindRequest   = "market.request"
	KindAssigned  = "market.assigned"
	KindFailed    = "market.failed"
	KindAccounted = "market.accounted"
)

// Bounds on what one entry carries.
const (
	MaxRequirement = 4096
	MaxNames       = 16
	MaxCandidates  = 64
	MaxReason      = 512
	// MaxDeadline bounds how far ahead a request's deadline lies.
	MaxDeadline = 24 * time.Hour
	maxName     = 128
	maxPrice    = 24
)

// Failure reasons.
const (
	ReasonAttest      = "attest"      // the provider's isolate did not attest, or not as required
	ReasonUnreachable = "unreachable" // the provider's node did not answer (died)
	ReasonDeadline    = "deadline"    // the run passed its deadline
	ReasonRefused     = "refused"     // the node refused the session or the run failed there
)

// Request is the body of market.request, signed by the consumer: run the
// sealed program whose ciphertext digest is Sealed and whose plaintext
// hashes to ProgramSHA256 on inputs named Inputs, on an isolate whose verified
// claims and offer satisfy Requirement (a CEL expression, package
// market), at no more than MaxPrice per CPU-second, finished by Deadline.
// ID is the consumer's random name for it (32 bytes, hex): the key of the
// request's state and the seed of the ranking's tie-break. SealingKey is
// the consumer's HPKE key, to which results are sealed.
type Request struct {
	ID            string   `json:"id"`
	ProgramSHA256 string   `json:"program_sha256"`
	Sealed        string   `json:"sealed"`
	Requirement   string   `json:"requirement"`
	Inputs        []string `json:"inputs"`
	Deadline      string   `json:"deadline"`
	MaxPrice      string   `json:"max_price,omitempty"`
	SealingKey    string   `json:"sealing_key"`
}

// Candidate is one provider the dispatcher ranked: its live offer (entry
// index) and price, and its failures among its last runs as the ledger
// records them. Anyone recomputes the order with market.Rank.
type Candidate struct {
	Node     string `json:"node"`
	Offer    uint64 `json:"offer"`
	Price    string `json:"price,omitempty"`
	Failures int    `json:"failures"`
}

// Skipped is a ranked candidate the dispatcher passed over, and why (its
// evidence did not verify, or did not satisfy the requirement).
type Skipped struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

// Assignment is the body of market.assigned, signed by a dispatcher: the
// request goes to session Session of Node, created for the policy Policy
// (whose hash the node's session.created entry names), under fencing
// token Token — one more than the request's last. The ranking inputs
// (Candidates, best first, and the ones Skipped) let anyone recompute the
// choice; Class, Measurement and ClaimsSHA256 are what the dispatcher
// verified of the chosen isolate. The run must end by RunDeadline, or the
// assignment may be failed by anyone.
type Assignment struct {
	Request      string          `json:"request"`
	Token        uint64          `json:"token"`
	Node         string          `json:"node"`
	Session      string          `json:"session"`
	PolicyHash   string          `json:"policy_hash"`
	Policy       json.RawMessage `json:"policy"`
	Class        string          `json:"class"`
	Measurement  string          `json:"measurement,omitempty"`
	ClaimsSHA256 string          `json:"claims_sha256"`
	Candidates   []Candidate     `json:"candidates"`
	Skipped      []Skipped       `json:"skipped,omitempty"`
	RunDeadline  string          `json:"run_deadline"`
}

// Failure is the body of market.failed: the assignment under Token ended
// without a result (Reason one of the Reason constants). Submitted by the
// dispatcher that made it, the consumer, or anyone once its run deadline
// is past. The node's record counts a failure; the request is open again.
type Failure struct {
	Request string `json:"request"`
	Token   uint64 `json:"token"`
	Reason  string `json:"reason"`
	Detail  string `json:"detail,omitempty"`
}

// Account is the body of market.accounted, signed by the consumer once it
// holds the result of the run under Token: the provider's own report of
// CPU time and wall time (CPUMillis, WallMillis — the provider's claim,
// carried over the attested session), the wall time the consumer
// observed from sending its input to receiving the result, and the price
// per CPU-second agreed (the candidate's). It finishes the request.
type Account struct {
	Request            string `json:"request"`
	Token              uint64 `json:"token"`
	Provider           string `json:"provider"`
	Class              string `json:"class"`
	CPUMillis          uint64 `json:"cpu_ms"`
	WallMillis         uint64 `json:"wall_ms"`
	ObservedWallMillis uint64 `json:"observed_wall_ms"`
	Price              string `json:"price,omitempty"`
}

func decode(kind string, body []byte, v any) error { return acl.Decode(kind, body, v) }

// DecodeRequest reads and checks a market.request body.
func DecodeRequest(body []byte) (*Request, error) {
	var r Request
	if err := decode(KindRequest, body, &r); err != nil {
		return nil, err
	}
	return &r, r.Check()
}

// Check checks r's shape (not its deadline against a clock).
func (r *Request) Check() error {
	if !isHex(r.ID, 64) {
		return errors.New("request id: want 64 lower-case hex digits (32 random bytes)")
	}
	if !isHex(r.ProgramSHA256, 64) {
		return errors.New("request program_sha256: want 64 lower-case hex digits")
	}
	if d, ok := strings.CutPrefix(r.Sealed, "sha256:"); !ok || !isHex(d, 64) {
		return errors.New("request sealed: want sha256:<64 lower-case hex digits>")
	}
	if r.Requirement == "" || len(r.Requirement) > MaxRequirement {
		return fmt.Errorf("request requirement: want 1 to %d bytes", MaxRequirement)
	}
	if len(r.Inputs) == 0 || len(r.Inputs) > MaxNames {
		return fmt.Errorf("request inputs: want 1 to %d names", MaxNames)
	}
	for i, n := range r.Inputs {
		if err := checkName(n); err != nil {
			return fmt.Errorf("request input %d: %v", i, err)
		}
		for _, m := range r.Inputs[:i] {
			if m == n {
				return fmt.Errorf("request input %q: named twice", n)
			}
		}
	}
	if _, err := acl.ParseTime(r.Deadline); err != nil {
		return fmt.Errorf("request deadline: %v", err)
	}
	if r.MaxPrice != "" && !IsDecimal(r.MaxPrice) {
		return fmt.Errorf("request max_price %q: want a decimal such as 0.001", r.MaxPrice)
	}
	if r.SealingKey == "" || len(r.SealingKey) > 2048 {
		return errors.New("request sealing_key: want the consumer's sealing key")
	}
	return nil
}

// DeadlineTime returns r's deadline.
func (r *Request) DeadlineTime() time.Time { t, _ := acl.ParseTime(r.Deadline); return t }

// DecodeAssignment reads and checks a market.assigned body.
func DecodeAssignment(body []byte) (*Assignment, error) {
	var a Assignment
	if err := decode(KindAssigned, body, &a); err != nil {
		return nil, err
	}
	return &a, a.Check()
}

// Check checks a's shape.
func (a *Assignment) Check() error {
	if !isHex(a.Request, 64) {
		return errors.New("assignment request: want the request's id")
	}
	if a.Token < 1 {
		return errors.New("assignment token: want 1 or more")
	}
	if _, err := protocol.ParseEd25519Key(a.Node); err != nil {
		return fmt.Errorf("assignment node: %v", err)
	}
	if err := protocol.ValidSessionID(a.Session); err != nil {
		return fmt.Errorf("assignment session: %v", err)
	}
	if !isHex(a.PolicyHash, 64) || !isHex(a.ClaimsSHA256, 64) {
		return errors.New("assignment policy_hash, claims_sha256: want 64 lower-case hex digits")
	}
	if len(a.Policy) == 0 || a.Policy[0] != '{' {
		return errors.New("assignment policy: want the policy document (an object)")
	}
	if !isToken(a.Class) {
		return errors.New("assignment class: want lower-case letters, digits and '-'")
	}
	if a.Measurement != "" && !isHex(a.Measurement, 0) {
		return errors.New("assignment measurement: want lower-case hex")
	}
	if len(a.Candidates) == 0 || len(a.Candidates) > MaxCandidates || len(a.Skipped) > MaxCandidates {
		return fmt.Errorf("assignment candidates: want 1 to %d (and at most as many skipped)", MaxCandidates)
	}
	seen := map[string]bool{}
	for _, c := range a.Candidates {
		if _, err := protocol.ParseEd25519Key(c.Node); err != nil {
			return fmt.Errorf("assignment candidate: %v", err)
		}
		if seen[c.Node] {
			return fmt.Errorf("assignment candidate %s: listed twice", c.Node)
		}
		seen[c.Node] = true
		if c.Price != "" && !IsDecimal(c.Price) || c.Failures < 0 {
			return fmt.Errorf("assignment candidate %s: bad price or failures", c.Node)
		}
	}
	for _, s := range a.Skipped {
		if !seen[s.Node] {
			return fmt.Errorf("assignment skipped %s: not a candidate", s.Node)
		}
		if s.Reason == "" || len(s.Reason) > MaxReason {
			return fmt.Errorf("assignment skipped %s: want a reason of 1 to %d bytes", s.Node, MaxReason)
		}
	}
	if _, err := acl.ParseTime(a.RunDeadline); err != nil {
		return fmt.Errorf("assignment run_deadline: %v", err)
	}
	return nil
}

// Chosen returns the candidate the assignment names.
func (a *Assignment) Chosen() (Candidate, bool) {
	for _, c := range a.Candidates {
		if c.Node == a.Node {
			return c, true
		}
	}
	return Candidate{}, false
}

// DecodeFailure reads and checks a market.failed body.
func DecodeFailure(body []byte) (*Failure, error) {
	var f Failure
	if err := decode(KindFailed, body, &f); err != nil {
		return nil, err
	}
	switch {
	case !isHex(f.Request, 64):
		return nil, errors.New("failure request: want the request's id")
	case f.Token < 1:
		return nil, errors.New("failure token: want 1 or more")
	case f.Reason != ReasonAttest && f.Reason != ReasonUnreachable && f.Reason != ReasonDeadline && f.Reason != ReasonRefused:
		return nil, fmt.Errorf("failure reason %.40q: want attest, unreachable, deadline or refused", f.Reason)
	case len(f.Detail) > MaxReason:
		return nil, fmt.Errorf("failure detail: at most %d bytes", MaxReason)
	}
	return &f, nil
}

// DecodeAccount reads and checks a market.accounted body.
func DecodeAccount(body []byte) (*Account, error) {
	var a Account
	if err := decode(KindAccounted, body, &a); err != nil {
		return nil, err
	}
	switch {
	case !isHex(a.Request, 64):
		return nil, errors.New("account request: want the request's id")
	case a.Token < 1:
		return nil, errors.New("account token: want 1 or more")
	case !isToken(a.Class):
		return nil, errors.New("account class: want lower-case letters, digits and '-'")
	case a.Price != "" && !IsDecimal(a.Price):
		return nil, fmt.Errorf("account price %q: want a decimal", a.Price)
	}
	if _, err := protocol.ParseEd25519Key(a.Provider); err != nil {
		return nil, fmt.Errorf("account provider: %v", err)
	}
	return &a, nil
}

// IsDecimal reports whether s is digits with at most one '.' between
// digits: a non-negative decimal without exponent or sign.
func IsDecimal(s string) bool {
	if len(s) > maxPrice {
		return false
	}
	whole, frac, hasDot := strings.Cut(s, ".")
	digits := func(t string) bool { return t != "" && strings.Trim(t, "0123456789") == "" }
	return digits(whole) && (!hasDot || digits(frac))
}

// DecimalLess reports a < b for decimals IsDecimal accepts, exactly (no
// floating point: validators must agree).
func DecimalLess(a, b string) bool {
	aw, af, _ := strings.Cut(a, ".")
	bw, bf, _ := strings.Cut(b, ".")
	aw, bw = strings.TrimLeft(aw, "0"), strings.TrimLeft(bw, "0")
	if len(aw) != len(bw) {
		return len(aw) < len(bw)
	}
	if aw != bw {
		return aw < bw
	}
	n := max(len(af), len(bf))
	af += strings.Repeat("0", n-len(af))
	bf += strings.Repeat("0", n-len(bf))
	return af < bf
}

func checkName(s string) error {
	if s == "" || len(s) > maxName {
		return fmt.Errorf("want 1 to %d bytes", maxName)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') || c == '.' && s[0] == '.' {
			return fmt.Errorf("%.40q: want letters, digits, '-', '_' and '.'", s)
		}
	}
	return nil
}

func isHex(s string, n int) bool {
	if s == "" || n > 0 && len(s) != n || len(s)%2 != 0 {
		return false
	}
	return strings.Trim(s, "0123456789abcdef") == ""
}

func isToken(s string) bool {
	return s != "" && len(s) <= 32 && strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == ""
}
