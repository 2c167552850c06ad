package node

import (
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/isolate"
)

// What the node shows of itself to an observer (the console, package
// console): public material only. Nothing here is a key, a plaintext or an
// envelope; a session's policy is shown in canonical form, as every
// principal holds it. Each call takes a snapshot under the locks the API
// takes, so an observer never sees a half-taken step.

// View is the node's identity and load.
type View struct {
	PlatformKey string       `json:"platform_key"` // "ed25519:…"
	Class       attest.Class `json:"isolate_class"`
	Version     string       `json:"version"`
	// Ledger names the ledger the node records on ("" with none);
	// Registered is the index of its node.registered entry there.
	Ledger     string    `json:"ledger,omitempty"`
	Registered uint64    `json:"registered_index,omitempty"`
	Started    time.Time `json:"started"`
	// Open and Closed count sessions held and remembered as closed.
	Open   int `json:"sessions_open"`
	Closed int `json:"sessions_closed"`
	// RunSlots is how many runs may go at once; Running how many do.
	RunSlots    int    `json:"run_slots"`
	Running     int    `json:"running"`
	WarmWorkers int    `json:"warm_workers"`
	WorkerBin   string `json:"worker_binary,omitempty"`
	StoredBytes int64  `json:"stored_bytes"`
	// Refusals counts refused requests by rule since the start, with the
	// latest of each; Recent lists the latest refusals, newest first.
	Refusals []RuleCount `json:"refusals"`
	Recent   []Refusal   `json:"recent_refusals"`
}

// RuleCount is how often one rule refused a request.
type RuleCount struct {
	Rule  string    `json:"rule"`
	Count uint64    `json:"count"`
	Last  time.Time `json:"last"`
}

// Refusal is one refused request: when, which rule, which RPC. Who sent
// it is not kept (metrics and this list never name principals).
type Refusal struct {
	Time   time.Time `json:"time"`
	Rule   string    `json:"rule"`
	Method string    `json:"method"`
}

// View returns the node's identity and load.
func (n *Node) View() View {
	v := View{
		PlatformKey: protocol.FormatEd25519Key(n.PlatformKey()), Class: n.class, Version: Version,
		Ledger: n.opts.LedgerName, Registered: n.registered, Started: n.started,
		RunSlots: cap(n.runSlots), Running: len(n.runSlots), WarmWorkers: n.opts.WarmWorkers,
		StoredBytes: n.admit.storedTotal(),
	}
	if n.opts.Ledger == nil {
		v.Ledger, v.Registered = "", 0
	}
	if n.ownsRun != nil {
		v.WorkerBin, _ = n.ownsRun.WorkerBinary()
	}
	n.mu.RLock()
	v.Open, v.Closed = len(n.sessions), n.closed.len()
	n.mu.RUnlock()
	v.Refusals, v.Recent = n.refusals.snapshot()
	return v
}

// SessionSummary is one line of the session list.
type SessionSummary struct {
	ID         string    `json:"id"`
	PolicyName string    `json:"policy_name,omitempty"`
	PolicyHash string    `json:"policy_hash,omitempty"`
	State      string    `json:"state"`
	Created    time.Time `json:"created,omitzero"`
	Closed     time.Time `json:"closed,omitzero"`
	ClosedBy   string    `json:"closed_by,omitempty"`
}

// Sessions lists the sessions the node holds, newest first, then up to
// maxClosed of those it remembers as closed, the most recently closed
// first.
func (n *Node) Sessions(maxClosed int) []SessionSummary {
	n.mu.RLock()
	open := make([]*session, 0, len(n.sessions))
	for _, s := range n.sessions {
		open = append(open, s)
	}
	closed := n.closed.all()
	n.mu.RUnlock()
	out := make([]SessionSummary, 0, len(open)+min(len(closed), maxClosed))
	for _, s := range open {
		s.mu.Lock()
		out = append(out, SessionSummary{ID: s.id, PolicyName: s.pol.Name, PolicyHash: hex.EncodeToString(s.hash[:]),
			State: s.rec.State, Created: s.rec.Created})
		s.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	sort.Slice(closed, func(i, j int) bool { return closed[i].Closed.After(closed[j].Closed) })
	for _, ts := range closed[:min(len(closed), maxClosed)] {
		sum := SessionSummary{ID: ts.ID, State: stateClosed, Closed: ts.Closed, ClosedBy: ts.By}
		if a, err := n.receipts.load(ts.ID); err == nil {
			sum.PolicyName, sum.PolicyHash, sum.Created = a.PolicyName, a.PolicyHash, a.Created
		}
		out = append(out, sum)
	}
	return out
}

// SessionView is one session as an observer sees it: where it stands in
// its state machine, its policy, who provided what (as envelope hashes)
// and each step's ledger index. Never data.
type SessionView struct {
	SessionSummary
	Reason string `json:"reason,omitempty"`
	// Policy is the policy's canonical form (RFC 8785), whose SHA-256 is
	// PolicyHash.
	Policy   []byte          `json:"policy"`
	Programs []SlotView      `json:"programs"`
	Inputs   []SlotView      `json:"inputs"`
	Outputs  []OutputView    `json:"outputs"`
	Events   []EventView     `json:"events"`
	Report   *isolate.Report `json:"report,omitempty"`
	// RunStarted is when the current run began (zero unless running).
	RunStarted time.Time `json:"run_started,omitzero"`
	// Archived is set for a closed session: what is shown was kept when
	// it closed (its state is erased).
	Archived bool `json:"archived,omitempty"`
}

// SlotView is one program or input: who must provide it and, once
// present, the SHA-256 of the sealed envelope received.
type SlotView struct {
	Name           string    `json:"name"`
	Provider       string    `json:"provider"`
	Stored         bool      `json:"stored,omitempty"` // fetched by the node from a blob store
	Present        bool      `json:"present"`
	EnvelopeSHA256 string    `json:"envelope_sha256,omitempty"`
	Uploaded       time.Time `json:"uploaded,omitzero"`
}

// OutputView is one output: its readers and who fetched it.
type OutputView struct {
	Name      string   `json:"name"`
	Readers   []string `json:"readers"`
	Available bool     `json:"available"`
	FetchedBy []string `json:"fetched_by,omitempty"`
}

// EventView is one step of a session, with its ledger index (0: not
// recorded, or not yet).
type EventView struct {
	Kind        string    `json:"kind"`
	Principal   string    `json:"principal,omitempty"`
	Name        string    `json:"name,omitempty"`
	Time        time.Time `json:"time"`
	LedgerIndex uint64    `json:"ledger_index,omitempty"`
}

// ErrNoSession reports a session the node neither holds nor remembers.
var ErrNoSession = errors.New("no such session on this node")

// Session returns the view of one session: a live one from its state, a
// closed one from what was kept when it closed.
func (n *Node) Session(id string) (*SessionView, error) {
	if err := protocol.ValidSessionID(id); err != nil {
		return nil, err
	}
	if s := n.session(id); s != nil {
		return s.observe(), nil
	}
	n.mu.RLock()
	ts, ok := n.closed.get(id)
	n.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("session %s: %w", id, ErrNoSession)
	}
	v := &SessionView{SessionSummary: SessionSummary{ID: id, State: stateClosed, Closed: ts.Closed, ClosedBy: ts.By},
		Reason: fmt.Sprintf("closed by %q; its data is erased", ts.By), Archived: true}
	if a, err := n.receipts.load(id); err == nil {
		v.PolicyName, v.PolicyHash, v.Created, v.Policy = a.PolicyName, a.PolicyHash, a.Created, a.Policy
		v.Events, v.Report = a.Events, a.Report
	}
	return v, nil
}

func (s *session) observe() *SessionView {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rec
	v := &SessionView{
		SessionSummary: SessionSummary{ID: s.id, PolicyName: s.pol.Name, PolicyHash: hex.EncodeToString(s.hash[:]),
			State: r.State, Created: r.Created},
		Reason: r.Reason, Policy: slices.Clone(r.Policy), Report: r.Report,
	}
	for _, p := range s.pol.Programs {
		v.Programs = append(v.Programs, slotView(p.Name, p.Provider, false, r.Programs[p.Name]))
	}
	for _, in := range s.pol.Inputs {
		v.Inputs = append(v.Inputs, slotView(in.Name, in.Provider, in.Stored(), r.Inputs[in.Name]))
	}
	for _, o := range s.pol.Outputs {
		ov := OutputView{Name: o.Name, Readers: slices.Clone(o.Readers)}
		if or := r.Outputs[o.Name]; or != nil {
			ov.Available, ov.FetchedBy = len(or.Envelopes) > 0, slices.Clone(or.Fetched)
		}
		v.Outputs = append(v.Outputs, ov)
	}
	v.Events = eventViews(r.Events)
	if r.State == stateRunning {
		// The run began with the last upload (or the latest restart).
		for _, e := range r.Events {
			if e.Kind == EventProgramUploaded || e.Kind == EventInputUploaded || e.Kind == EventRunRestarted {
				v.RunStarted = e.Time
			}
		}
		if v.RunStarted.IsZero() {
			v.RunStarted = r.Created
		}
	}
	return v
}

func slotView(name, provider string, stored bool, sr *slotRecord) SlotView {
	sv := SlotView{Name: name, Provider: provider, Stored: stored}
	if sr != nil {
		sv.Present, sv.EnvelopeSHA256, sv.Uploaded = true, sr.EnvelopeSHA256, sr.Uploaded
	}
	return sv
}

func eventViews(evs []eventRecord) []EventView {
	out := make([]EventView, 0, len(evs))
	for _, e := range evs {
		out = append(out, EventView{Kind: e.Kind, Principal: e.Principal, Name: e.Name, Time: e.Time, LedgerIndex: e.LedgerIndex})
	}
	return out
}

// ReceiptMaterial is what a session's receipt needs besides the ledger:
// the policy every principal agreed to, and the session's public keys as
// the isolate certified them. All of it is public: the certificate is
// what every client sees in the TLS handshake, the HPKE key what Attest
// returns.
type ReceiptMaterial struct {
	Session     string       `json:"session"`
	Policy      []byte       `json:"policy"` // canonical form
	PolicyHash  string       `json:"policy_hash"`
	Class       attest.Class `json:"isolate_class"`
	PlatformKey string       `json:"platform_key"`
	// SessionCertificate is the DER RA-TLS certificate of the session's
	// TLS key; its evidence binds the policy hash and HPKEPublicKey.
	SessionCertificate []byte    `json:"session_certificate"`
	HPKEPublicKey      []byte    `json:"hpke_public_key"`
	Created            time.Time `json:"created"`
}

// Receipt returns a session's receipt material, also after the session
// was closed (kept then; see receiptArchive).
func (n *Node) Receipt(id string) (*ReceiptMaterial, error) {
	if err := protocol.ValidSessionID(id); err != nil {
		return nil, err
	}
	if s := n.session(id); s != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.receiptMaterial(), nil
	}
	a, err := n.receipts.load(id)
	if err != nil {
		return nil, fmt.Errorf("session %s: %w", id, ErrNoSession)
	}
	return &a.ReceiptMaterial, nil
}

// receiptMaterial: callers hold s.mu.
func (s *session) receiptMaterial() *ReceiptMaterial {
	return &ReceiptMaterial{
		Session: s.id, Policy: slices.Clone(s.rec.Policy), PolicyHash: hex.EncodeToString(s.hash[:]),
		Class: s.n.class, PlatformKey: protocol.FormatEd25519Key(s.n.PlatformKey()),
		SessionCertificate: slices.Clone(s.core.cert.Certificate[0]), HPKEPublicKey: slices.Clone(s.core.hpkePub),
		Created: s.rec.Created,
	}
}

// refusalLog keeps the count of refusals by rule and the latest few.
type refusalLog struct {
	mu     sync.Mutex
	counts map[string]*RuleCount
	recent []Refusal // ring, next write at pos
	pos    int
}

const recentRefusals = 50

func (l *refusalLog) add(rule, method string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts = map[string]*RuleCount{}
	}
	c := l.counts[rule]
	if c == nil {
		c = &RuleCount{Rule: rule}
		l.counts[rule] = c
	}
	c.Count++
	c.Last = at
	r := Refusal{Time: at, Rule: rule, Method: method}
	if len(l.recent) < recentRefusals {
		l.recent = append(l.recent, r)
	} else {
		l.recent[l.pos] = r
	}
	l.pos = (l.pos + 1) % recentRefusals
}

func (l *refusalLog) snapshot() ([]RuleCount, []Refusal) {
	l.mu.Lock()
	defer l.mu.Unlock()
	counts := make([]RuleCount, 0, len(l.counts))
	for _, c := range l.counts {
		counts = append(counts, *c)
	}
	sort.Slice(counts, func(i, j int) bool {
		if counts[i].Count != counts[j].Count {
			return counts[i].Count > counts[j].Count
		}
		return strings.Compare(counts[i].Rule, counts[j].Rule) < 0
	})
	recent := slices.Clone(l.recent)
	sort.SliceStable(recent, func(i, j int) bool { return recent[i].Time.After(recent[j].Time) })
	return counts, recent
}
