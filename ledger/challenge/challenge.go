// Package challenge gives the bodies of the proof-of-isolated-execution
// entries (rule version 9 on) and the pure functions both the state
// machine and every client use to judge them: the epoch's draw (which
// operator and seed each node is challenged with, and which peers verify
// it) from the epoch's beacon, the commitment, the signed result
// statement, and the verdict a round's reveals add up to. The state
// machine (package ledger) judges entries with these functions; nodes
// (package piee) compute and check them the same way, so a verdict is
// recomputed by anyone from the ledger alone.
//
// The rounds (docs/piee.md):
//
//	piee.operator  a consortium member publishes a deterministic challenge
//	               program by hash, with its arguments and limits
//	piee.epoch     opens an epoch: every registered node with a live offer
//	               is challenged; the draw follows from the beacon, the
//	               first cosigned checkpoint published after the epoch entry
//	piee.commit    the challenged node, and each verifier drawn for it,
//	               commits H(domain ‖ submitter ‖ challenge ‖ Q) before the
//	               commit deadline
//	piee.reveal    after the commit deadline, before the reveal deadline:
//	               Q and the run's report, signed by the submitter's
//	               registered (attested) key, opening its commitment
//	piee.verdict   after the reveal deadline, anyone registered states the
//	               round's outcome; the ledger recomputes it and refuses
//	               any other
package challenge

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/jcs"
	"github.com/cloisterhq/cloister/ledger/acl"
)

// Entry kinds.
const (
	KindOperator = "piee.operator"
	KindEpoch    = "piee.epoch"
	KindCommit   = "piee.commit"
	KindReveal   = "piee.reveal"
	KindVerdict  = "piee.verdict"
)

// Bounds.
const (
	MaxOperators    = 64
	MaxArgs         = 16
	MaxArgLen       = 128
	MaxParticipants = 64
	// MaxVerifiers is the most peers drawn to re-execute one challenge.
	MaxVerifiers = 5
	// DefaultVerifiers is k when an epoch names none: with the node, four
	// votes, of which one liar and one silent party still leave a decision.
	DefaultVerifiers = 3
	MinWindow        = 10   // seconds: short enough for tests, long enough that an epoch cannot be opened only to find nodes unavailable
	MaxWindow        = 3600 // seconds
	MaxProtections   = 32
	maxName          = 64
	maxEngine        = 64
	maxMemory        = 4 << 30
	maxTimeoutMS     = 600_000
)

// Operator classes: an arithmetic operator's Q is its output; a probe's Q
// is the isolation outcome (the run hit its memory limit, its deadline, or
// the guest found no network and no file outside /input).
const (
	ClassArith = "arith"
	ClassProbe = "probe"
)

// Outcomes of a round.
const (
	Pass         = "pass"         // the node's Q is the deciding result (Tally)
	Fail         = "fail"         // another Q decided: independent re-executions disagree with the node
	Unavailable  = "unavailable"  // the node revealed nothing valid in time (down, late, or never committed)
	Inconclusive = "inconclusive" // no result decided: nothing is said of the node
)

// Operator is the body of piee.operator: a deterministic program, named by
// the SHA-256 of its module, run with Args (argv[1:]; the seed follows as
// the last argument) under Memory bytes and TimeoutMS. CostMS is its
// expected time on a reference core, a hint for schedulers.
type Operator struct {
	Name          string   `json:"name"`
	ProgramSHA256 string   `json:"program_sha256"`
	Args          []string `json:"args"`
	Class         string   `json:"class"`
	Memory        uint64   `json:"memory"`
	TimeoutMS     uint64   `json:"timeout_ms"`
	CostMS        uint64   `json:"cost_ms"`
}

// Epoch is the body of piee.epoch: the commit window and the reveal
// window that follows it, in seconds from the block that takes the entry,
// and k, the verifiers drawn per challenged node (0: DefaultVerifiers).
type Epoch struct {
	CommitSeconds uint64 `json:"commit_seconds"`
	RevealSeconds uint64 `json:"reveal_seconds"`
	Verifiers     uint64 `json:"verifiers,omitempty"`
}

// Commit is the body of piee.commit.
type Commit struct {
	Epoch      uint64 `json:"epoch"`
	Node       string `json:"node"`
	Commitment string `json:"commitment"`
}

// Run is what a node reports of the run that produced Q. Outcome, exit
// code and outputs make up Q itself (ResultDigest); engine and protections
// are the node's own statement, signed but not compared.
type Run struct {
	Outcome     string   `json:"outcome"`
	ExitCode    int      `json:"exit_code"`
	Output      string   `json:"output_sha256,omitempty"` // SHA-256 of /output/result, if any
	Engine      string   `json:"engine"`
	Protections []string `json:"protections"`
	Class       string   `json:"class"` // the node's isolate class
}

// Statement is what the submitter of a reveal signs with its registered
// key: which challenge, which operator, which seed, the result digest Q
// and the run. Its canonical JSON, after StatementDomain, is the signed
// message.
type Statement struct {
	Epoch     uint64 `json:"epoch"`
	Node      string `json:"node"`
	Challenge string `json:"challenge"`
	Operator  string `json:"operator"`
	Program   string `json:"program_sha256"`
	Seed      string `json:"seed"`
	Result    string `json:"result"`
	Run       Run    `json:"run"`
}

// Reveal is the body of piee.reveal.
type Reveal struct {
	Statement Statement `json:"statement"`
	Signature string    `json:"signature"` // base64 Ed25519 by the submitter over SignedMessage
}

// Verdict is the body of piee.verdict: the outcome and who agreed,
// disagreed or was missing among the drawn verifiers (keys sorted).
type Verdict struct {
	Epoch    uint64   `json:"epoch"`
	Node     string   `json:"node"`
	Outcome  string   `json:"outcome"`
	Result   string   `json:"result,omitempty"` // the majority's Q, when there is one
	Agree    []string `json:"agree"`
	Disagree []string `json:"disagree"`
	Missing  []string `json:"missing"`
	// Proves says what this outcome shows for the node's isolate class
	// (docs/piee.md): only a hardware TEE class makes a pass a statement
	// about isolation.
	Proves string `json:"proves"`
}

// Domains of the hashes and the signature.
const (
	BeaconDomain    = "cloister/piee/beacon/v1\n"
	ChallengeDomain = "cloister/piee/challenge/v1\n"
	CommitDomain    = "cloister/piee/commit/v1\n"
	StatementDomain = "cloister/piee/result/v1\n"
	drawDomain      = "cloister/piee/draw/v1\n"
)

// Decode reads body into v: known fields only, one value.
func Decode(kind string, body []byte, v any) error { return acl.Decode(kind, body, v) }

// DecodeOperator reads and checks a piee.operator body.
func DecodeOperator(body []byte) (*Operator, error) {
	var o Operator
	if err := Decode(KindOperator, body, &o); err != nil {
		return nil, err
	}
	return &o, o.Check()
}

// Check checks o's shape.
func (o *Operator) Check() error {
	if !isName(o.Name) {
		return fmt.Errorf("operator name %q: want 1 to %d lower-case letters, digits and '-'", o.Name, maxName)
	}
	if !isHex(o.ProgramSHA256, 64) {
		return errors.New("operator program_sha256: want 64 lower-case hex digits")
	}
	if len(o.Args) > MaxArgs {
		return fmt.Errorf("operator args: at most %d", MaxArgs)
	}
	for _, a := range o.Args {
		if a == "" || len(a) > MaxArgLen || strings.ContainsAny(a, "\x00\n") {
			return fmt.Errorf("operator arg %.20q: want 1 to %d bytes, no NUL or newline", a, MaxArgLen)
		}
	}
	if o.Class != ClassArith && o.Class != ClassProbe {
		return fmt.Errorf("operator class %q: want %s or %s", o.Class, ClassArith, ClassProbe)
	}
	if o.Memory < 1<<20 || o.Memory > maxMemory {
		return fmt.Errorf("operator memory %d: want 1 MiB to 4 GiB", o.Memory)
	}
	if o.TimeoutMS < 100 || o.TimeoutMS > maxTimeoutMS {
		return fmt.Errorf("operator timeout_ms %d: want 100 to %d", o.TimeoutMS, maxTimeoutMS)
	}
	return nil
}

// DecodeEpoch reads and checks a piee.epoch body.
func DecodeEpoch(body []byte) (*Epoch, error) {
	var e Epoch
	if err := Decode(KindEpoch, body, &e); err != nil {
		return nil, err
	}
	return &e, e.Check()
}

// Check checks e's shape.
func (e *Epoch) Check() error {
	for _, w := range []uint64{e.CommitSeconds, e.RevealSeconds} {
		if w < MinWindow || w > MaxWindow {
			return fmt.Errorf("epoch windows: want %d to %d seconds each", MinWindow, MaxWindow)
		}
	}
	if e.Verifiers > MaxVerifiers {
		return fmt.Errorf("epoch verifiers: at most %d", MaxVerifiers)
	}
	return nil
}

// K is the number of verifiers the epoch asks for.
func (e *Epoch) K() int {
	if e.Verifiers == 0 {
		return DefaultVerifiers
	}
	return int(e.Verifiers)
}

// DecodeCommit reads and checks a piee.commit body.
func DecodeCommit(body []byte) (*Commit, error) {
	var c Commit
	if err := Decode(KindCommit, body, &c); err != nil {
		return nil, err
	}
	if _, err := protocol.ParseEd25519Key(c.Node); err != nil {
		return nil, fmt.Errorf("commit node: %v", err)
	}
	if !isHex(c.Commitment, 64) {
		return nil, errors.New("commit commitment: want 64 lower-case hex digits")
	}
	return &c, nil
}

// DecodeReveal reads and checks a piee.reveal body (not its signature,
// which needs the submitter: VerifyReveal).
func DecodeReveal(body []byte) (*Reveal, error) {
	var r Reveal
	if err := Decode(KindReveal, body, &r); err != nil {
		return nil, err
	}
	s := &r.Statement
	if _, err := protocol.ParseEd25519Key(s.Node); err != nil {
		return nil, fmt.Errorf("reveal node: %v", err)
	}
	for name, h := range map[string]string{"challenge": s.Challenge, "program_sha256": s.Program, "seed": s.Seed, "result": s.Result} {
		if !isHex(h, 64) {
			return nil, fmt.Errorf("reveal %s: want 64 lower-case hex digits", name)
		}
	}
	if !isName(s.Operator) {
		return nil, errors.New("reveal operator: not an operator name")
	}
	if err := s.Run.check(); err != nil {
		return nil, err
	}
	if want := ResultDigest(s.Run); want != s.Result {
		return nil, fmt.Errorf("reveal result %s is not the digest of its run (%s)", s.Result, want)
	}
	return &r, nil
}

func (r *Run) check() error {
	if !isName(r.Outcome) {
		return errors.New("reveal run outcome: want a word")
	}
	if r.Output != "" && !isHex(r.Output, 64) {
		return errors.New("reveal run output_sha256: want 64 lower-case hex digits")
	}
	if r.Engine == "" || len(r.Engine) > maxEngine {
		return fmt.Errorf("reveal run engine: want 1 to %d bytes", maxEngine)
	}
	if len(r.Protections) > MaxProtections {
		return fmt.Errorf("reveal run protections: at most %d", MaxProtections)
	}
	for _, p := range r.Protections {
		if !isName(p) && !strings.ContainsRune(p, '_') {
			return fmt.Errorf("reveal run protection %.20q: want a word", p)
		}
	}
	if !isName(r.Class) {
		return errors.New("reveal run class: want an isolate class")
	}
	return nil
}

// DecodeVerdict reads and checks a piee.verdict body's shape.
func DecodeVerdict(body []byte) (*Verdict, error) {
	var v Verdict
	if err := Decode(KindVerdict, body, &v); err != nil {
		return nil, err
	}
	if _, err := protocol.ParseEd25519Key(v.Node); err != nil {
		return nil, fmt.Errorf("verdict node: %v", err)
	}
	return &v, nil
}

// ResultDigest is Q as compared between nodes: the SHA-256 of the
// canonical JSON of the run's outcome, exit code and output digest —
// what the operator computed, or for a probe, how the isolate stopped it.
func ResultDigest(r Run) string {
	b, _ := canon(struct {
		Outcome  string `json:"outcome"`
		ExitCode int    `json:"exit_code"`
		Output   string `json:"output_sha256,omitempty"`
	}{r.Outcome, r.ExitCode, r.Output})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// SignedMessage is the exact byte string a reveal's signature covers.
func (s *Statement) SignedMessage() []byte {
	b, _ := canon(s)
	return append([]byte(StatementDomain), b...)
}

// Sign signs s with key, making a reveal body.
func Sign(key ed25519.PrivateKey, s Statement) Reveal {
	return Reveal{Statement: s, Signature: base64Std(ed25519.Sign(key, s.SignedMessage()))}
}

// VerifyReveal checks r's signature against the submitter's key.
func (r *Reveal) VerifyReveal(submitter ed25519.PublicKey) error {
	sig, err := decodeBase64(r.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize || !ed25519.Verify(submitter, r.Statement.SignedMessage(), sig) {
		return errors.New("reveal signature: does not verify under the submitter's registered key")
	}
	return nil
}

// Commitment is H(domain ‖ submitter ‖ challenge ‖ Q): bound to its
// submitter, so a node that copies another's commitment cannot open it.
func Commitment(submitter ed25519.PublicKey, challenge, result string) string {
	h := sha256.New()
	h.Write([]byte(CommitDomain))
	h.Write(submitter)
	c, _ := hex.DecodeString(challenge)
	q, _ := hex.DecodeString(result)
	h.Write(c)
	h.Write(q)
	return hex.EncodeToString(h.Sum(nil))
}

// Beacon is the epoch's randomness: the hash of the first cosigned
// checkpoint note published after the epoch entry. The note's signatures
// are the validators' Ed25519 signatures over a tree that includes the
// epoch entry, unknown to anyone until a quorum of validators has signed:
// no node — the challenged ones included — can predict or choose it.
// (What a validator can still bias: docs/piee.md.)
func Beacon(note []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(BeaconDomain))
	h.Write(note)
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// Challenge is what the draw gives one participant: the operator, the
// seed of its input, the challenge id bound into commitments, and the
// verifiers (sorted keys).
type Challenge struct {
	Node      string   `json:"node"`
	Operator  string   `json:"operator"`
	Seed      string   `json:"seed"`
	ID        string   `json:"challenge"`
	Verifiers []string `json:"verifiers"`
}

// Draw gives every participant (sorted, text keys) its challenge in epoch
// number epoch: operator and seed from the beacon and the node's key,
// then k verifiers among the other participants by a seeded shuffle.
// operators is the sorted list of operator names in force.
func Draw(beacon [32]byte, epoch uint64, participants, operators []string, k int) []Challenge {
	out := make([]Challenge, 0, len(participants))
	if len(operators) == 0 {
		return out
	}
	for _, node := range participants {
		st := newStream(beacon, node)
		op := operators[st.next()%uint64(len(operators))]
		seed := st.bytes()
		idh := sha256.New()
		idh.Write([]byte(ChallengeDomain))
		idh.Write(binary.BigEndian.AppendUint64(nil, epoch))
		idh.Write([]byte(node))
		idh.Write([]byte(op))
		idh.Write(seed)
		others := make([]string, 0, len(participants)-1)
		for _, p := range participants {
			if p != node {
				others = append(others, p)
			}
		}
		for i := len(others) - 1; i > 0; i-- { // Fisher–Yates, seeded
			j := int(st.next() % uint64(i+1))
			others[i], others[j] = others[j], others[i]
		}
		vs := slices.Clone(others[:min(k, len(others))])
		slices.Sort(vs)
		out = append(out, Challenge{Node: node, Operator: op, Seed: hex.EncodeToString(seed),
			ID: hex.EncodeToString(idh.Sum(nil)), Verifiers: vs})
	}
	return out
}

// Find returns node's challenge in a draw.
func Find(draw []Challenge, node string) (Challenge, bool) {
	for _, c := range draw {
		if c.Node == node {
			return c, true
		}
	}
	return Challenge{}, false
}

type stream struct {
	key [32]byte
	n   uint64
}

func newStream(beacon [32]byte, node string) *stream {
	h := sha256.New()
	h.Write([]byte(drawDomain))
	h.Write(beacon[:])
	h.Write([]byte(node))
	s := &stream{}
	copy(s.key[:], h.Sum(nil))
	return s
}

func (s *stream) bytes() []byte {
	h := sha256.New()
	h.Write(s.key[:])
	h.Write(binary.BigEndian.AppendUint64(nil, s.n))
	s.n++
	return h.Sum(nil)
}

// next is a uniform 64-bit value; modulo bias is below 2^-50 for the
// small ranges drawn here.
func (s *stream) next() uint64 { return binary.BigEndian.Uint64(s.bytes()) }

// Tally is the verdict of a challenge from the reveals that opened their
// commitments in time: results maps each submitter (text key) to its Q.
// class is the challenged node's isolate class.
//
// The quorum: the votes are the revealed results of the node and its k
// drawn verifiers. A result decides when a strict majority of the votes
// hold it, at least two do, and at least one of those is a verifier (a
// node never certifies itself). The node passes when its Q decides, fails
// when another Q decides. So one liar — node or verifier — among three
// revealing parties is outvoted, and a node that is down counts for
// nothing either way: a round with the node silent is unavailable, never
// failed; a round without a deciding result is inconclusive. The bound
// this gives (a faulty node passes only with as many colluding revealed
// verifiers as honest ones) is argued in docs/piee.md.
func Tally(epoch uint64, c Challenge, results map[string]string, class string) Verdict {
	v := Verdict{Epoch: epoch, Node: c.Node, Agree: []string{}, Disagree: []string{}, Missing: []string{}}
	counts, fromVerifier := map[string]int{}, map[string]bool{}
	total := 0
	for _, who := range append([]string{c.Node}, c.Verifiers...) {
		if q, ok := results[who]; ok {
			counts[q]++
			total++
			if who != c.Node {
				fromVerifier[q] = true
			}
		}
	}
	majority := ""
	for q, n := range counts {
		if 2*n > total && n >= 2 && fromVerifier[q] {
			majority = q
		}
	}
	for _, ver := range c.Verifiers {
		q, ok := results[ver]
		switch {
		case !ok:
			v.Missing = append(v.Missing, ver)
		case majority != "" && q == majority:
			v.Agree = append(v.Agree, ver)
		default:
			v.Disagree = append(v.Disagree, ver)
		}
	}
	v.Result = majority
	own, revealed := results[c.Node]
	switch {
	case !revealed:
		v.Outcome = Unavailable
	case majority == "":
		v.Outcome = Inconclusive
	case own == majority:
		v.Outcome = Pass
	default:
		v.Outcome = Fail
	}
	v.Proves = Proves(v.Outcome, class)
	return v
}

// HardwareClasses are the isolate classes whose pass says something about
// isolation: the key that signed Q never leaves hardware-protected memory.
var HardwareClasses = []string{"sev-snp", "tdx", "sgx", "nitro"}

// Proves says, in one line, what an outcome shows for a node of class.
func Proves(outcome, class string) string {
	switch outcome {
	case Pass:
		if slices.Contains(HardwareClasses, class) {
			return "isolation and correct execution: Q was computed and signed inside the attested " + class + " isolate"
		}
		return "availability and correct arithmetic only: a " + class + " node could compute Q outside its isolate and sign it with the key it holds"
	case Fail:
		return "a fault: the node's Q differs from the result a majority of the revealed re-executions agreed on"
	case Unavailable:
		return "nothing about correctness: the node revealed no result in time"
	default:
		return "nothing: no result was held by a majority of the revealed votes"
	}
}

// Equal reports whether two verdicts state the same thing.
func (v *Verdict) Equal(w *Verdict) bool {
	a, _ := canon(v)
	b, _ := canon(w)
	return bytes.Equal(a, b)
}

func isName(s string) bool {
	if s == "" || len(s) > maxName {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// canon is v's one canonical JSON form (RFC 8785).
func canon(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jcs.Canonicalize(b)
}

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func decodeBase64(s string) ([]byte, error) { return base64.StdEncoding.Strict().DecodeString(s) }
