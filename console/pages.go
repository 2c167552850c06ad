package console

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/policy"
	"github.com/cloisterhq/cloister/receipt"
)

// classProtects is the honest line per isolate class: the README's table
// "What each isolate class protects — and what it does not", word for word
// (console_test.go holds the two together).
var classProtects = map[string]ClassLine{
	"software": {
		Others:   "yes: each principal sees only what the policy gives it; inputs are sealed to the session key; outputs to their readers",
		Operator: "no: the operator holds the platform key, can read and alter the isolate's memory and disk, and could run another binary",
	},
	"tpm": {
		Others:   "yes",
		Operator: "no, for the runtime; they can read memory and disk and, as root, reset PCR 23 and extend any hash into it, so the runtime measurement is reported, not proven. What it does establish: the machine's boot chain",
	},
	"sev-snp": {Others: "yes", Operator: "yes, up to the TEE's own guarantees (memory encrypted from the host; side channels and vendor trust remain)"},
	"tdx":     {Others: "yes", Operator: "yes, up to the TEE's guarantees"},
	"nitro":   {Others: "yes", Operator: "yes, up to the TEE's guarantees (trust rests on AWS)"},
}

// ClassLine says what an isolate class protects against whom.
type ClassLine struct {
	Class    string `json:"class"`
	Others   string `json:"against_other_principals"`
	Operator string `json:"against_node_operator"`
}

func protects(class string) ClassLine {
	l, ok := classProtects[class]
	if !ok {
		l = ClassLine{Others: "see the README's table", Operator: "see the README's table"}
	}
	l.Class = class
	return l
}

// ledgerInfo is the ledger as its API describes itself, and how far the
// explorer's index reached.
type ledgerInfo struct {
	Origin         string             `json:"origin"`
	Height         int64              `json:"height"`
	Size           uint64             `json:"size"`
	CheckpointSize uint64             `json:"checkpoint_size"`
	Checkpointed   bool               `json:"checkpointed"`
	RulesVersion   int                `json:"rules_version"`
	Validators     []verify.Validator `json:"validators"`
	TotalPower     int64              `json:"total_power"`
	Indexed        int                `json:"indexed"`
	IndexFull      bool               `json:"index_full,omitempty"`
	IndexError     string             `json:"index_error,omitempty"`
	Error          string             `json:"error,omitempty"`
}

func (s *Server) ledgerInfo(ctx context.Context) *ledgerInfo {
	if s.opts.Ledger == nil {
		return nil
	}
	li := &ledgerInfo{}
	li.Indexed, li.IndexFull, li.IndexError = s.index.status()
	st, err := s.opts.Ledger.Status(ctx)
	if err != nil {
		li.Error = err.Error()
		return li
	}
	li.Origin, li.Height, li.Size, li.CheckpointSize, li.Checkpointed, li.RulesVersion = verify.Origin(st.ChainID), st.Height, st.Size, st.CheckpointSize, st.Checkpointed, st.RulesVersion
	if vs, err := s.opts.Ledger.Validators(ctx); err == nil {
		li.Validators, li.TotalPower = vs.Validators, vs.TotalPower()
	} else {
		li.Error = err.Error()
	}
	return li
}

// --- overview

type overviewData struct {
	Node     node.View             `json:"node"`
	Protects ClassLine             `json:"isolate_class_protects"`
	Ledger   *ledgerInfo           `json:"ledger,omitempty"`
	Live     []node.SessionSummary `json:"live_sessions"`
	States   map[string]int        `json:"sessions_by_state"`
}

func (overviewData) title() string { return "Overview" }

func (s *Server) loadOverview(r *http.Request) (any, error) {
	v := s.opts.Node.View()
	d := overviewData{Node: v, Protects: protects(string(v.Class)), Ledger: s.ledgerInfo(r.Context()), States: map[string]int{}}
	d.Live = []node.SessionSummary{}
	for _, ss := range s.opts.Node.Sessions(0) {
		d.States[ss.State]++
		d.Live = append(d.Live, ss)
	}
	if len(d.Live) > 20 {
		d.Live = d.Live[:20]
	}
	return d, nil
}

// --- ledger explorer

type ledgerData struct {
	Ledger   *ledgerInfo           `json:"ledger"`
	Kinds    []kindCount           `json:"kinds"`
	Kind     string                `json:"kind,omitempty"`
	Query    string                `json:"query,omitempty"`
	Match    string                `json:"match,omitempty"` // what the query was taken as
	Entries  []entryRow            `json:"entries"`
	Older    uint64                `json:"older,omitempty"` // ?before= of the next page
	Sessions []node.SessionSummary `json:"sessions,omitempty"`
}

func (ledgerData) title() string { return "Ledger" }

type kindCount struct {
	Kind  string `json:"kind"`
	Count int    `json:"count"`
}

type entryRow struct {
	Index uint64 `json:"index"`
	entryMeta
}

const ledgerPageSize = 50

func (s *Server) loadLedger(r *http.Request) (any, error) {
	if s.opts.Ledger == nil {
		return nil, notFound("this node records on no ledger (it runs with --no-ledger)")
	}
	q := r.URL.Query()
	d := ledgerData{Ledger: s.ledgerInfo(r.Context()), Kind: q.Get("kind"), Query: strings.TrimSpace(q.Get("q")), Entries: []entryRow{}}
	for k, n := range s.index.kinds() {
		d.Kinds = append(d.Kinds, kindCount{k, n})
	}
	sort.Slice(d.Kinds, func(i, j int) bool { return d.Kinds[i].Kind < d.Kinds[j].Kind })
	if len(d.Kind) > 100 || len(d.Query) > 200 {
		return nil, badRequest("kind or query too long")
	}
	var ids []uint64
	switch {
	case d.Query == "":
		before := uint64(1<<63 - 1)
		if b := q.Get("before"); b != "" {
			n, err := strconv.ParseUint(b, 10, 63)
			if err != nil {
				return nil, badRequest("before %q: want an entry index", b)
			}
			before = n
		}
		ids, d.Older = s.index.list(d.Kind, before, ledgerPageSize)
	default:
		tok, match, err := searchToken(d.Query)
		if err != nil {
			return nil, err
		}
		d.Match = match
		if n, err := strconv.ParseUint(d.Query, 10, 63); err == nil {
			ids = []uint64{n}
		} else {
			ids = s.index.lookup(tok)
			slices.Reverse(ids)
		}
		d.Sessions = s.searchSessions(d.Query)
	}
	for _, i := range ids {
		m, ok := s.index.meta(i)
		if !ok || d.Kind != "" && m.Kind != d.Kind {
			continue
		}
		d.Entries = append(d.Entries, entryRow{i, m})
		if len(d.Entries) == 1000 {
			break
		}
	}
	return d, nil
}

// searchToken reads a search query: an entry index, a session id, a key
// or a digest.
func searchToken(q string) (tok, match string, err error) {
	switch {
	case strings.Trim(q, "0123456789") == "":
		return "", "entry index", nil
	case protocol.ValidSessionID(q) == nil:
		return tokSession + q, "session id", nil
	case strings.HasPrefix(q, protocol.Ed25519KeyPrefix):
		return tokKey + q, "key", nil
	case isHex(q, 64):
		return tokDigest + strings.ToLower(q), "digest", nil
	case validArtifact(q):
		return tokDigest + q[len("sha256:"):], "digest", nil
	}
	return "", "", badRequest("search by an entry index, a session id (32 hex digits), a key (ed25519:…) or a digest (64 hex digits: policy, program, envelope or evidence SHA-256; sha256:… for an artifact)")
}

// searchSessions finds the sessions (held or kept) whose id is q or
// whose policy names q (a principal's key, a program's digest…).
func (s *Server) searchSessions(q string) []node.SessionSummary {
	var out []node.SessionSummary
	needle := []byte(q)
	if isHex(q, 64) {
		needle = []byte(strings.ToLower(q))
	}
	for _, ss := range s.opts.Node.Sessions(1000) {
		if ss.ID == q || ss.PolicyHash == string(needle) {
			out = append(out, ss)
			continue
		}
		if v, err := s.opts.Node.Session(ss.ID); err == nil && len(needle) >= 16 && bytes.Contains(v.Policy, needle) {
			out = append(out, ss)
		}
	}
	return out
}

// --- one entry

type entryData struct {
	Index      uint64          `json:"index"`
	Height     int64           `json:"height"`
	LeafHash   string          `json:"leaf_hash"` // base64
	Tx         string          `json:"tx"`
	Kind       string          `json:"kind"`
	Event      string          `json:"event,omitempty"`
	Submitter  string          `json:"submitter"`
	Time       string          `json:"time"`
	Nonce      uint64          `json:"nonce"`
	Body       json.RawMessage `json:"body"`
	BodyText   string          `json:"-"`
	Session    string          `json:"session,omitempty"`
	SigValid   bool            `json:"signature_valid"`
	Proof      *proofData      `json:"inclusion_proof,omitempty"`
	Checkpoint *checkpointData `json:"checkpoint,omitempty"`
}

func (e entryData) title() string { return fmt.Sprintf("Entry %d", e.Index) }
func (entryData) script() string  { return "entry.js" }

type proofData struct {
	Size     uint64   `json:"size"`
	Hashes   []string `json:"hashes"` // base64
	Verified bool     `json:"verified"`
	Error    string   `json:"error,omitempty"`
}

type checkpointData struct {
	Note        string          `json:"note"`
	Origin      string          `json:"origin"`
	Size        uint64          `json:"size"`
	Root        string          `json:"root"`
	Cosigners   []cosigner      `json:"cosigners"`
	SignedPower int64           `json:"signed_power"`
	TotalPower  int64           `json:"total_power"`
	Error       string          `json:"error,omitempty"`
	Validators  json.RawMessage `json:"validator_set"`
}

type cosigner struct {
	Name  string `json:"name"`
	Power int64  `json:"power"`
}

func (s *Server) loadEntry(r *http.Request) (any, error) {
	if s.opts.Ledger == nil {
		return nil, notFound("this node records on no ledger")
	}
	i, err := strconv.ParseUint(r.PathValue("index"), 10, 63)
	if err != nil {
		return nil, badRequest("entry index %.40q: want a number", r.PathValue("index"))
	}
	ctx := r.Context()
	e, err := s.opts.Ledger.Get(ctx, i)
	if err != nil {
		return nil, notFound("entry %d: %v", i, err)
	}
	se := e.Signed
	d := entryData{Index: i, Height: e.Height, LeafHash: base64.StdEncoding.EncodeToString(e.LeafHash[:]), Tx: string(e.Tx),
		Kind: string(se.Entry.Kind), Submitter: se.Entry.Submitter, Time: se.Entry.Time, Nonce: se.Entry.Nonce, Body: se.Entry.Body,
		SigValid: se.VerifySignature() == nil}
	var ind bytes.Buffer
	json.Indent(&ind, se.Entry.Body, "", "  ")
	d.BodyText = ind.String()
	var body map[string]any
	json.Unmarshal(se.Entry.Body, &body)
	d.Session, _ = body["session"].(string)
	d.Event, _ = body["event"].(string)
	cp, err := s.opts.Ledger.Checkpoint(ctx)
	if err != nil {
		d.Checkpoint = &checkpointData{Error: err.Error()}
		return d, nil
	}
	vs, err := s.opts.Ledger.Validators(ctx)
	if err != nil {
		d.Checkpoint = &checkpointData{Error: err.Error()}
		return d, nil
	}
	d.Checkpoint = checkpointInfo(cp.Note, vs)
	if i >= cp.Size {
		d.Proof = &proofData{Error: fmt.Sprintf("entry %d is not yet covered by the latest checkpoint (size %d); checkpoints trail commits by a block or two", i, cp.Size)}
		return d, nil
	}
	p, err := s.opts.Ledger.InclusionProof(ctx, i, cp.Size)
	if err != nil {
		d.Proof = &proofData{Error: err.Error()}
		return d, nil
	}
	d.Proof = &proofData{Size: cp.Size, Hashes: []string{}}
	for _, h := range p.Hashes {
		d.Proof.Hashes = append(d.Proof.Hashes, base64.StdEncoding.EncodeToString(h[:]))
	}
	if opened, err := verify.OpenCheckpoint(cp.Note, vs); err != nil {
		d.Proof.Error = err.Error()
	} else if err := verify.CheckInclusion(p, opened, i, verify.LeafHash(e.Tx)); err != nil {
		d.Proof.Error = err.Error()
	} else {
		d.Proof.Verified = true
	}
	return d, nil
}

// checkpointInfo decodes a checkpoint note and judges it against the
// validator set the ledger serves (what the node can say; a viewer judges
// it against its own pinned set in the browser).
func checkpointInfo(note []byte, vs *verify.ValidatorSet) *checkpointData {
	cd := &checkpointData{Note: string(note)}
	if b, err := json.Marshal(vs); err == nil {
		cd.Validators = b
	}
	power := map[string]int64{}
	for _, v := range vs.Validators {
		power[v.Name] = v.Power
	}
	cd.TotalPower = vs.TotalPower()
	c, err := verify.OpenCheckpoint(note, vs)
	if err != nil {
		cd.Error = err.Error()
		if pc, perr := verify.ParseCheckpointNote(note); perr == nil {
			c = pc
		} else {
			return cd
		}
	}
	cd.Origin, cd.Size, cd.Root, cd.SignedPower = c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:]), c.SignedPower
	for _, n := range c.Signers {
		cd.Cosigners = append(cd.Cosigners, cosigner{n, power[n]})
	}
	return cd
}

// --- sessions

type sessionsData struct {
	Sessions []node.SessionSummary `json:"sessions"`
}

func (sessionsData) title() string { return "Sessions" }

func (s *Server) loadSessions(r *http.Request) (any, error) {
	return sessionsData{Sessions: s.opts.Node.Sessions(500)}, nil
}

type sessionData struct {
	*node.SessionView
	Decoded   *policy.Policy `json:"policy_decoded,omitempty"`
	PolicyErr string         `json:"policy_error,omitempty"`
	Steps     []stateStep    `json:"state_machine"`
	Terminal  bool           `json:"terminal"`
	// Entries are the session's entries on the ledger (from the
	// explorer's index; the node's own events carry their indices too).
	Entries  []entryRow `json:"ledger_entries"`
	Protects ClassLine  `json:"isolate_class_protects"`
}

func (d sessionData) title() string { return "Session " + d.ID }
func (sessionData) script() string  { return "live.js" }

type stateStep struct {
	State  string `json:"state"`
	Status string `json:"status"` // done, current, next, skipped
}

func (s *Server) session(id string) (*node.SessionView, error) {
	v, err := s.opts.Node.Session(id)
	if errors.Is(err, node.ErrNoSession) {
		return nil, notFound("%v", err)
	}
	if err != nil {
		return nil, badRequest("%v", err)
	}
	return v, nil
}

func (s *Server) loadSession(r *http.Request) (any, error) {
	v, err := s.session(r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	d := sessionData{SessionView: v, Steps: stateMachine(v.State), Entries: []entryRow{}, Protects: protects(string(s.opts.Node.View().Class))}
	d.Terminal = v.State == "finished" || v.State == "failed" || v.State == "closed"
	if len(v.Policy) > 0 {
		if p, err := policy.Parse(v.Policy); err == nil {
			d.Decoded = p
		} else {
			d.PolicyErr = err.Error()
		}
	}
	if s.index != nil {
		for _, i := range s.index.lookup(tokSession + v.ID) {
			if m, ok := s.index.meta(i); ok {
				d.Entries = append(d.Entries, entryRow{i, m})
			}
		}
	}
	return d, nil
}

// stateMachine places a session in provisioning → running → finished or
// failed → closed.
func stateMachine(state string) []stateStep {
	order := []string{"provisioning", "running", "finished", "failed", "closed"}
	pos := slices.Index(order, state)
	out := make([]stateStep, 0, len(order))
	for i, st := range order {
		status := "next"
		switch {
		case i == pos:
			status = "current"
		case i < pos:
			status = "done"
		}
		// finished and failed are alternatives.
		if st == "failed" && state != "failed" && pos > 3 || st == "finished" && (state == "failed" || state == "closed") {
			status = "skipped"
		}
		if st == "finished" && state == "closed" {
			status = "done" // closed after finishing, or earlier: the page's events say
		}
		out = append(out, stateStep{st, status})
	}
	return out
}

// --- receipts

type receiptData struct {
	Session    string           `json:"session"`
	PolicyName string           `json:"policy_name,omitempty"`
	State      string           `json:"state"`
	Receipt    *receipt.Receipt `json:"receipt,omitempty"`
	Entries    []receiptEntry   `json:"entries"`
	Pending    []uint64         `json:"pending,omitempty"`
	NodeCheck  *receipt.Result  `json:"node_check,omitempty"`
	NodeError  string           `json:"node_check_error,omitempty"`
	Programs   []policy.Program `json:"programs,omitempty"`
	Error      string           `json:"error,omitempty"`
	Protects   ClassLine        `json:"isolate_class_protects"`
}

func (d receiptData) title() string { return "Receipt of session " + d.Session }
func (receiptData) script() string  { return "receipt.js" }

type receiptEntry struct {
	Index     uint64 `json:"index"`
	Kind      string `json:"kind"`
	Event     string `json:"event,omitempty"`
	Principal string `json:"principal,omitempty"`
	Name      string `json:"name,omitempty"`
	Time      string `json:"time"`
	LeafHash  string `json:"leaf_hash"`
	ProofLen  int    `json:"proof_hashes"`
}

// receiptFor builds the current receipt of session id.
func (s *Server) receiptFor(ctx context.Context, id string, trusted *uint64) (*receipt.Receipt, []uint64, error) {
	m, err := s.opts.Node.Receipt(id)
	if errors.Is(err, node.ErrNoSession) {
		return nil, nil, notFound("%v", err)
	}
	if err != nil {
		return nil, nil, badRequest("%v", err)
	}
	if s.opts.Ledger == nil {
		return nil, nil, notFound("this node records on no ledger, so its sessions have no receipts")
	}
	v := s.opts.Node.View()
	indices := []uint64{v.Registered}
	if sv, err := s.opts.Node.Session(id); err == nil {
		for _, e := range sv.Events {
			if e.LedgerIndex != 0 {
				indices = append(indices, e.LedgerIndex)
			}
		}
	}
	indices = append(indices, s.index.lookup(tokSession+id)...)
	mat := &receipt.Material{Session: m.Session, Policy: m.Policy, PolicyHash: m.PolicyHash, Class: string(m.Class),
		PlatformKey: m.PlatformKey, Certificate: m.SessionCertificate, HPKEPublicKey: m.HPKEPublicKey}
	r, pending, err := receipt.Build(ctx, mat, s.opts.Ledger, indices, trusted)
	if errors.Is(err, receipt.ErrNotCheckpointed) {
		return nil, pending, &httpError{http.StatusServiceUnavailable, fmt.Errorf("session %s: %w; try again in a few seconds", id, err)}
	}
	return r, pending, err
}

func (s *Server) loadReceiptPage(r *http.Request) (any, error) {
	id := r.PathValue("id")
	v, err := s.session(id)
	if err != nil {
		return nil, err
	}
	d := receiptData{Session: id, PolicyName: v.PolicyName, State: v.State, Entries: []receiptEntry{}, Protects: protects(string(s.opts.Node.View().Class))}
	rc, pending, err := s.receiptFor(r.Context(), id, nil)
	d.Pending = pending
	if err != nil {
		d.Error = err.Error()
		return d, nil
	}
	d.Receipt = rc
	if p, err := policy.Parse([]byte(rc.Policy)); err == nil {
		d.Programs = p.Programs
	}
	for _, e := range rc.Ledger.Entries {
		se, err := verify.DecodeEntry([]byte(e.Tx))
		if err != nil {
			continue
		}
		var b map[string]any
		json.Unmarshal(se.Entry.Body, &b)
		re := receiptEntry{Index: e.Index, Kind: string(se.Entry.Kind), Time: se.Entry.Time, ProofLen: len(e.Proof)}
		re.Event, _ = b["event"].(string)
		re.Principal, _ = b["principal"].(string)
		re.Name, _ = b["name"].(string)
		if o, ok := b["output"].(string); ok {
			re.Name = o
		}
		lh := verify.LeafHash([]byte(e.Tx))
		re.LeafHash = base64.StdEncoding.EncodeToString(lh[:])
		d.Entries = append(d.Entries, re)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	res, err := receipt.Verify(ctx, rc, nil)
	d.NodeCheck = res
	if err != nil {
		d.NodeError = err.Error()
	}
	return d, nil
}

// serveReceipt serves the receipt file (?download=1: as an attachment;
// ?trusted=N: with the consistency proof from a checkpoint of size N).
func (s *Server) serveReceipt(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var trusted *uint64
	if t := r.URL.Query().Get("trusted"); t != "" {
		n, err := strconv.ParseUint(t, 10, 63)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "trusted: want a checkpoint size"})
			return
		}
		trusted = &n
	}
	rc, _, err := s.receiptFor(r.Context(), id, trusted)
	if err != nil {
		writeJSON(w, statusOf(err), map[string]string{"error": err.Error()})
		return
	}
	b, err := rc.Encode()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	if r.URL.Query().Get("download") != "" {
		w.Header().Set("Content-Disposition", `attachment; filename="receipt-`+id+`.json"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

// serveConsistency serves a consistency proof between two checkpoint
// sizes, for the browser verifier to hold the receipt's checkpoint to the
// viewer's pinned one.
func (s *Server) serveConsistency(w http.ResponseWriter, r *http.Request) {
	if s.opts.Ledger == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no ledger"})
		return
	}
	from, err1 := strconv.ParseUint(r.URL.Query().Get("from"), 10, 63)
	to, err2 := strconv.ParseUint(r.URL.Query().Get("to"), 10, 63)
	if err1 != nil || err2 != nil || from > to {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want from and to checkpoint sizes, from ≤ to"})
		return
	}
	p, err := s.opts.Ledger.ConsistencyProof(r.Context(), from, to)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	out := struct {
		From   uint64   `json:"from"`
		To     uint64   `json:"to"`
		Hashes []string `json:"hashes"`
	}{From: from, To: to, Hashes: []string{}}
	for _, h := range p.Hashes {
		out.Hashes = append(out.Hashes, base64.StdEncoding.EncodeToString(h[:]))
	}
	writeJSON(w, http.StatusOK, out)
}
