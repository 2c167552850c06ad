package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/jcs"
	"github.com/cloisterhq/cloister/ledger/model"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/policy"
	"github.com/cloisterhq/cloister/seal"
)

// Signer signs messages with the calling node's platform key (a
// *node.Node).
type Signer interface {
	PlatformKey() ed25519.PublicKey
	SignEntry(kind verify.Kind, body any) (*verify.SignedEntry, error)
}

// Caller answers a total model's sub-model calls (the host call
// CallName) on the initiator's node.
type Caller struct {
	// Signer is the node; set it before the first call (a node is made
	// with its host calls, so this is set once the node exists).
	Signer Signer
	Ledger Ledger
	// Dial, when set, replaces how TCP connections are made (tests).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Logger, when set, gets each answered call's steps at debug level.
	Logger *slog.Logger

	mu    sync.Mutex
	peers map[string]*peer // by endpoint and platform key
	// runs are the latest workflows' calls and graphs (in memory: the
	// ledger keeps their receipts and recorded graphs), workflows their
	// order, oldest first.
	runs      map[string]*runState
	workflows []string
}

// keptWorkflows bounds the workflows a caller keeps for 'workflow status'.
const keptWorkflows = 256

// runState is one workflow's calls as its node made them.
type runState struct {
	calls    []WorkflowCall
	last     []int // positions of the calls the latest host call answered
	inFlight int
	// Under a declared compute plan: its digest, each done task's
	// position in calls and each task's state.
	dag    *DAG
	dagSum string
	task   map[string]int
	state  map[string]taskState
	record uint64 // the workflow.recorded entry, once settled
	origin Origin // of its calls
}

// run returns workflow's state, made if new (c.mu held).
func (c *Caller) run(workflow string) *runState {
	if rs, ok := c.runs[workflow]; ok {
		return rs
	}
	if c.runs == nil {
		c.runs = map[string]*runState{}
	}
	if len(c.workflows) >= keptWorkflows {
		delete(c.runs, c.workflows[0])
		c.workflows = c.workflows[1:]
	}
	c.workflows = append(c.workflows, workflow)
	rs := &runState{}
	c.runs[workflow] = rs
	return rs
}

// WorkflowCall is one answered call of a workflow: the receipt's index
// and signed entry, what it says, and its place in the graph — the plan's
// task and the positions of the calls it comes after.
type WorkflowCall struct {
	Call     string          `json:"call"`
	Receipt  uint64          `json:"receipt"`
	Model    string          `json:"model"`
	Function string          `json:"function"`
	Holder   string          `json:"holder"`
	Rows     uint64          `json:"rows"`
	Task     string          `json:"task,omitempty"`
	After    []int           `json:"after,omitempty"`
	Entry    json.RawMessage `json:"entry"`

	endpoint string // the holder's, to ask where the receipt stands
	p        *peer
}

// Workflow is what PathWorkflows serves: a workflow's answered calls, the
// digest of the compute plan it declared, and the index of its recorded
// graph once its run settled.
type Workflow struct {
	Workflow string         `json:"workflow"`
	DAG      string         `json:"dag_sha256,omitempty"`
	Record   uint64         `json:"record,omitempty"`
	Calls    []WorkflowCall `json:"calls"`
}

// remember adds an answered call to its workflow and returns its position.
func (c *Caller) remember(o Origin, wc WorkflowCall) int {
	workflow := o.Workflow
	if workflow == "" {
		return -1
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rs := c.run(workflow)
	rs.origin = o
	rs.calls = append(rs.calls, wc)
	pos := len(rs.calls) - 1
	if wc.Task != "" && rs.state != nil {
		rs.state[wc.Task] = taskDone
		rs.task[wc.Task] = pos
	}
	return pos
}

// Workflow returns the calls workflow made that this node remembers.
func (c *Caller) Workflow(id string) (Workflow, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rs, ok := c.runs[id]
	if !ok {
		return Workflow{Workflow: id}, false
	}
	return Workflow{Workflow: id, DAG: rs.dagSum, Record: rs.record, Calls: append([]WorkflowCall{}, rs.calls...)}, true
}

// settleTimeout bounds how long a run's end waits for its calls'
// receipts to be on the ledger.
const settleTimeout = 2 * time.Minute

// Settle waits until every call of workflow has its receipt on the
// ledger — the holder says where it is, and the entry at that index must
// be the receipt the holder gave this node — and fails if the ledger
// refused one or the wait runs out. The node calls it before it releases
// a run's outputs (node.Options.SettleHostCalls).
func (c *Caller) Settle(ctx context.Context, workflow string) error {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	c.mu.Lock()
	var calls []WorkflowCall
	if rs, ok := c.runs[workflow]; ok {
		calls = append(calls, rs.calls...)
	}
	c.mu.Unlock()
	for i := range calls {
		wc := &calls[i]
		if wc.Receipt != 0 {
			continue
		}
		idx, err := c.awaitReceipt(ctx, wc)
		if err != nil {
			return fmt.Errorf("federation: the receipt of call %s (%s.%s on node %s): %w", wc.Call[:16], wc.Model, wc.Function, wc.Holder, err)
		}
		wc.Receipt = idx
		c.mu.Lock()
		for j, cc := range c.runs[workflow].calls {
			if cc.Call == wc.Call {
				c.runs[workflow].calls[j].Receipt = idx
			}
		}
		c.mu.Unlock()
	}
	return c.record(ctx, workflow, calls)
}

// record appends the workflow's call graph, workflow.recorded, signed by
// this node, and waits for its block. A ledger whose rules do not take
// the kind yet (before rule version 15) records none; the receipts are
// there all the same.
func (c *Caller) record(ctx context.Context, workflow string, calls []WorkflowCall) error {
	c.mu.Lock()
	rs := c.runs[workflow]
	if rs == nil || rs.record != 0 || len(calls) == 0 {
		c.mu.Unlock()
		return nil
	}
	w := model.Workflow{Workflow: workflow, Initiator: rs.origin.Initiator, Total: rs.origin.Total, DAG: rs.dagSum,
		Calls: make([]model.RecordedCall, len(calls))}
	c.mu.Unlock()
	for i, wc := range calls {
		w.Calls[i] = model.RecordedCall{Call: wc.Call, Receipt: wc.Receipt, Task: wc.Task, After: wc.After}
	}
	if err := w.Check(); err != nil {
		return fmt.Errorf("federation: the workflow's call graph: %w", err)
	}
	se, err := c.Signer.SignEntry(model.KindWorkflow, w)
	if err != nil {
		return fmt.Errorf("federation: signing the workflow's call graph: %w", err)
	}
	rcpt, err := c.Ledger.Append(ctx, se)
	var rej *verify.RejectedError
	if errors.As(err, &rej) && rej.Code == verify.CodeMalformed && strings.Contains(rej.Reason, "is not one of the ledger's kinds") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("federation: recording the workflow's call graph on the ledger: %w", err)
	}
	c.mu.Lock()
	rs.record = rcpt.Index
	c.mu.Unlock()
	return nil
}

// awaitReceipt asks wc's holder where its receipt stands until it is
// committed, and checks the entry at its index.
func (c *Caller) awaitReceipt(ctx context.Context, wc *WorkflowCall) (uint64, error) {
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		var st ReceiptStatus
		err := getJSON(ctx, wc.p.hc, wc.endpoint+PathReceipts+wc.Call, &st)
		switch {
		case err != nil && ctx.Err() != nil:
			return 0, fmt.Errorf("not on the ledger after %s: %w", settleTimeout, err)
		case err != nil:
			// the holder may be restarting: its receipts are on its disk
		case st.State == ReceiptRefused:
			return 0, fmt.Errorf("the ledger refused it: %s", st.Reason)
		case st.State == ReceiptCommitted:
			e, err := c.Ledger.Get(ctx, st.Index)
			if err != nil {
				return 0, fmt.Errorf("entry %d: %w", st.Index, err)
			}
			if !bytes.Equal(e.Tx, wc.Entry) {
				return 0, fmt.Errorf("entry %d is not the receipt the holder gave", st.Index)
			}
			return st.Index, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("not on the ledger after %s", settleTimeout)
		case <-time.After(wait):
		}
	}
}

// SettleRun is Settle for a node's run (node.Options.SettleHostCalls).
// A run given a compute plan settles only if it declared it and made
// every task: a run that stopped short of its plan does not release a
// partial answer.
func (c *Caller) SettleRun(ctx context.Context, ri node.RunInfo) error {
	o, err := runOrigin(ri)
	if err == nil && o.DAG != "" {
		if err := c.planDone(ri.Session); err != nil {
			return err
		}
	}
	return c.Settle(ctx, ri.Session)
}

// planDone checks that workflow declared its plan and made every task.
func (c *Caller) planDone(workflow string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	rs, ok := c.runs[workflow]
	if !ok || rs.dag == nil {
		return fmt.Errorf("federation: the run was given a compute plan (input %s) and did not declare it", DAGInput)
	}
	var open []string
	for _, t := range rs.dag.Tasks {
		if rs.state[t.Name] != taskDone {
			open = append(open, t.Name)
		}
	}
	if len(open) > 0 {
		return fmt.Errorf("federation: the run made %d of its compute plan's %d tasks; not made: %s", len(rs.dag.Tasks)-len(open), len(rs.dag.Tasks), strings.Join(open[:min(len(open), 8)], ", "))
	}
	return nil
}

// Mount serves the receipts of the latest workflows' calls on m (GET
// PathWorkflows+ID).
func (c *Caller) Mount(m Mounter) {
	m.Mount("GET "+PathWorkflows+"{id}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if protocol.ValidSessionID(id) != nil {
			refuse(w, CodeBadRequest, "workflow: want a session id")
			return
		}
		out, ok := c.Workflow(id)
		if !ok {
			refuse(w, CodeNotServed, "workflow %s: this node made no call for it since it started (its receipts are on the ledger)", id)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}))
}

// peer is a connection pool to one holder, pinned to its platform key.
type peer struct {
	hc   *http.Client
	mu   sync.Mutex
	cert []byte // the holder's TLS certificate, as verified
}

// HostCall is the host call to give a node (node.Options.HostCalls) under
// CallName. It may be made only from a node's session: the initiator is
// the session policy's one result reader.
func (c *Caller) HostCall() isolate.HostCall {
	return isolate.HostCall{MaxRequest: MaxArgs + 4096, MaxResponse: maxAnswer, Handle: c.handle}
}

// HostCalls are the host calls to give a node: CallName, CallsName and
// DAGName.
func (c *Caller) HostCalls() map[string]isolate.HostCall {
	return map[string]isolate.HostCall{
		CallName:  c.HostCall(),
		CallsName: {MaxRequest: MaxBatch * (MaxArgs + 4096), MaxResponse: MaxBatch * maxAnswer, Handle: c.handleBatch},
		DAGName:   {MaxRequest: maxDAGBytes, MaxResponse: 4096, Handle: c.handleDAG},
	}
}

func (c *Caller) handle(ctx context.Context, req []byte) ([]byte, error) {
	o, err := originOf(ctx)
	if err != nil {
		return nil, err
	}
	var r Request
	if err := decodeRequest(req, &r); err != nil {
		return nil, fmt.Errorf("federation: request: want {\"model\",\"function\",\"args\"}: %v", err)
	}
	as, errs, err := c.calls(ctx, o, []*Request{&r})
	if err != nil {
		return nil, err
	}
	if errs[0] != nil {
		return nil, errs[0]
	}
	return json.Marshal(as[0])
}

// handleBatch makes a Batch's calls concurrently.
func (c *Caller) handleBatch(ctx context.Context, req []byte) ([]byte, error) {
	o, err := originOf(ctx)
	if err != nil {
		return nil, err
	}
	var b Batch
	if err := decodeRequest(req, &b); err != nil || len(b.Calls) == 0 || len(b.Calls) > MaxBatch {
		return nil, fmt.Errorf("federation: request: want {\"calls\":[{\"model\",\"function\",\"args\"}, …]} with 1 to %d calls (%v)", MaxBatch, err)
	}
	reqs := make([]*Request, len(b.Calls))
	for i := range b.Calls {
		reqs[i] = &b.Calls[i]
	}
	as, errs, err := c.calls(ctx, o, reqs)
	if err != nil {
		return nil, err
	}
	out := BatchAnswer{Answers: make([]BatchItem, len(b.Calls))}
	for i := range as {
		if errs[i] != nil {
			out.Answers[i].Error = errs[i].Error()
			continue
		}
		out.Answers[i].Answer = *as[i]
	}
	return json.Marshal(out)
}

// calls makes one host call's requests concurrently, each placed in its
// run's graph first (begin) and the graph updated after (end).
func (c *Caller) calls(ctx context.Context, o Origin, reqs []*Request) ([]*Answer, []error, error) {
	links, errs, err := c.begin(o, reqs)
	if err != nil {
		return nil, nil, err
	}
	as := make([]*Answer, len(reqs))
	pos := make([]int, len(reqs))
	var wg sync.WaitGroup
	for i := range reqs {
		if errs[i] != nil {
			continue
		}
		wg.Go(func() {
			as[i], pos[i], errs[i] = c.call(ctx, o, reqs[i], links[i])
		})
	}
	wg.Wait()
	var answered []int
	for i := range reqs {
		if errs[i] == nil && pos[i] >= 0 {
			answered = append(answered, pos[i])
		}
	}
	c.end(o, links, errs, answered)
	return as, errs, nil
}

func decodeRequest(req []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(req))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// originOf is the origin of a host call made by a node's session: the
// session's one result reader is the initiator, its one program the
// total model.
func originOf(ctx context.Context) (Origin, error) {
	ri, ok := node.RunInfoFrom(ctx)
	if !ok {
		return Origin{}, errors.New("federation: calls are made from a node's session")
	}
	return runOrigin(ri)
}

// runOrigin is the origin of the calls of run ri.
func runOrigin(ri node.RunInfo) (Origin, error) {
	initiator, err := Initiator(ri.Policy)
	if err != nil {
		return Origin{}, err
	}
	o := Origin{Initiator: initiator, Workflow: ri.Session}
	if len(ri.Policy.Programs) == 1 {
		o.Total = ri.Policy.Programs[0].SHA256
	}
	for _, in := range ri.Policy.Inputs {
		if in.Name == DAGInput {
			if in.SHA256 == "" {
				return Origin{}, fmt.Errorf("federation: the run's policy gives input %s without pinning its SHA-256", DAGInput)
			}
			o.DAG = in.SHA256
		}
	}
	return o, nil
}

// Initiator returns the initiator of a session's calls: the one result
// reader of its policy.
func Initiator(p *policy.Policy) (string, error) {
	var found []string
	for _, pr := range p.Principals {
		for _, role := range pr.Roles {
			if role == policy.RoleResultReader {
				found = append(found, pr.SigningKey)
			}
		}
	}
	if len(found) != 1 {
		return "", errNoInitiator
	}
	pk, err := protocol.ParseEd25519Key(found[0])
	if err != nil {
		return "", fmt.Errorf("federation: initiator: %w", err)
	}
	return protocol.FormatEd25519Key(pk), nil
}

// Origin is on whose behalf and from which run a call is made: the
// initiator (a principal key), the workflow (a session id, or ""), the
// total model (the SHA-256 of the session's program, or "") and the
// compute plan the run was given (the SHA-256 its policy pins for input
// DAGInput, or "").
type Origin struct {
	Initiator string
	Workflow  string
	Total     string
	DAG       string
}

// Call makes one call from o and returns the checked answer.
func (c *Caller) Call(ctx context.Context, o Origin, r *Request) (*Answer, error) {
	a, _, err := c.call(ctx, o, r, link{})
	return a, err
}

// call makes one call placed at l in its run's graph, and returns the
// checked answer and its position among the run's calls (-1 outside a
// run).
func (c *Caller) call(ctx context.Context, o Origin, r *Request, l link) (*Answer, int, error) {
	if err := model.CheckName(r.Model); err != nil {
		return nil, -1, fmt.Errorf("federation: %w", err)
	}
	if err := model.CheckFunctionName(r.Function); err != nil {
		return nil, -1, fmt.Errorf("federation: %w", err)
	}
	if len(r.Args) == 0 {
		r.Args = json.RawMessage("{}")
	}
	// The arguments in canonical form: the signed call carries them so,
	// and both sides hash those bytes.
	args, err := jcs.Canonicalize(r.Args)
	if err != nil || len(args) > MaxArgs {
		return nil, -1, fmt.Errorf("federation: arguments: want JSON of at most %d bytes", MaxArgs)
	}
	st := steps{t: time.Now()}
	ml, err := c.Ledger.Models(ctx)
	if err != nil {
		return nil, -1, fmt.Errorf("federation: reading the ledger: %w", err)
	}
	m, err := ml.Model(r.Model)
	if err != nil {
		return nil, -1, fmt.Errorf("federation: %w", err)
	}
	if _, ok := m.Function(r.Function); !ok {
		return nil, -1, fmt.Errorf("federation: model %s publishes no function %q", r.Model, r.Function)
	}
	st.lap(&st.models)
	var errs []error
	for i, holder := range m.Nodes {
		ep := m.Endpoints[i]
		if ep == "" {
			errs = append(errs, fmt.Errorf("node %s names no endpoint", holder))
			continue
		}
		a, pos, err := c.callHolder(ctx, ep, holder, o, l, m.Version, r.Model, r.Function, args, &st)
		var re *RefusedError
		if err == nil || errors.As(err, &re) || ctx.Err() != nil {
			// A holder's refusal is the owner's answer: another node of
			// the same owner would give the same one.
			return a, pos, err
		}
		errs = append(errs, fmt.Errorf("node %s at %s: %w", holder, ep, err))
	}
	return nil, -1, fmt.Errorf("federation: no node serving %s answered: %w", r.Model, errors.Join(errs...))
}

func (c *Caller) callHolder(ctx context.Context, endpoint, holder string, o Origin, l link, version uint64, name, fn string, args []byte, st *steps) (*Answer, int, error) {
	p, err := c.peer(endpoint, holder)
	if err != nil {
		return nil, -1, err
	}
	cert, err := p.certificate(ctx, endpoint)
	if err != nil {
		return nil, -1, err
	}
	priv, err := seal.GenerateKey()
	if err != nil {
		return nil, -1, err
	}
	var id [32]byte
	rand.Read(id[:])
	call := Call{ID: hex.EncodeToString(id[:]), Model: name, Version: version, Function: fn, Args: args, ArgsSHA256: digest(args),
		Initiator: o.Initiator, Workflow: o.Workflow, Total: o.Total, Holder: holder, HolderCert: digest(cert), ReplyKey: seal.MarshalPublicKey(priv.PublicKey())}
	se, err := c.Signer.SignEntry(KindCall, call)
	if err != nil {
		return nil, -1, fmt.Errorf("federation: signing the call: %w", err)
	}
	st.lap(&st.prepare)
	req, err := http.NewRequestWithContext(ctx, "POST", endpoint+PathCall, bytes.NewReader(frame(se)))
	if err != nil {
		return nil, -1, err
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return nil, -1, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxSealedJSON+verify.MaxEntryBytes+1))
	if err != nil {
		return nil, -1, err
	}
	st.lap(&st.exchange)
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.Unmarshal(b, &eb) != nil || eb.Code == "" {
			return nil, -1, fmt.Errorf("holder answered %s", resp.Status)
		}
		return nil, -1, &RefusedError{Code: eb.Code, Message: fmt.Sprintf("federation: node %s refused %s.%s: %s", holder, name, fn, eb.Error)}
	}
	var rep Reply
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, -1, fmt.Errorf("holder's reply: %w", err)
	}
	rcpt, err := checkReceipt(&rep, &call, holder, protocol.FormatEd25519Key(c.Signer.PlatformKey()))
	if err != nil {
		return nil, -1, fmt.Errorf("federation: node %s's receipt: %w", holder, err)
	}
	plain, err := seal.Open(priv, rep.Sealed, resultInfo, []byte(call.ID))
	if err != nil {
		return nil, -1, fmt.Errorf("federation: node %s's result does not open: %w", holder, err)
	}
	var sr sealedResult
	if err := json.Unmarshal(plain, &sr); err != nil {
		return nil, -1, fmt.Errorf("federation: node %s's result: %w", holder, err)
	}
	if sr.Rows != rcpt.Rows {
		return nil, -1, fmt.Errorf("federation: node %s's result says %d rows, its receipt %d", holder, sr.Rows, rcpt.Rows)
	}
	pos := c.remember(o, WorkflowCall{Call: call.ID, Receipt: rep.Receipt, Model: name, Function: fn, Holder: holder, Rows: rcpt.Rows,
		Task: l.task, After: l.after, Entry: rep.Entry, endpoint: endpoint, p: p})
	st.lap(&st.opened)
	if c.Logger != nil && c.Logger.Enabled(ctx, slog.LevelDebug) {
		c.Logger.Debug("federation: call made", "call", call.ID, "model", name, "function", fn, "holder", holder,
			"models_us", st.models.Microseconds(), "prepare_us", st.prepare.Microseconds(), "exchange_us", st.exchange.Microseconds(),
			"open_us", st.opened.Microseconds(), "total_us", st.total().Microseconds())
	}
	return &Answer{Result: sr.Result, Rows: sr.Rows, Call: call.ID, Receipt: rep.Receipt, Holder: holder}, pos, nil
}

// checkReceipt checks that the reply's receipt is a model.called entry
// signed by holder for exactly this call and this sealed result.
func checkReceipt(rep *Reply, call *Call, holder, caller string) (*model.Call, error) {
	se, err := verify.DecodeEntry(rep.Entry)
	if err != nil {
		return nil, err
	}
	if err := se.VerifySignature(); err != nil {
		return nil, err
	}
	if se.Entry.Kind != model.KindCalled || se.Entry.Submitter != holder {
		return nil, fmt.Errorf("a %s entry by %s, not a model.called by the holder", se.Entry.Kind, se.Entry.Submitter)
	}
	rc, err := model.DecodeCall(se.Entry.Body)
	if err != nil {
		return nil, err
	}
	switch {
	case rc.ID != call.ID, rc.Model != call.Model, rc.Version != call.Version, rc.Function != call.Function:
		return nil, errors.New("it names another call")
	case rc.ArgsSHA256 != call.ArgsSHA256:
		return nil, errors.New("it names other arguments")
	case rc.ResultSHA256 != digest(rep.Sealed):
		return nil, errors.New("it names another result")
	case rc.Caller != caller, rc.Initiator != call.Initiator, rc.Workflow != call.Workflow:
		return nil, errors.New("it names another caller, initiator or workflow")
	}
	return rc, nil
}

// peer returns the pool for endpoint, pinned to holder's platform key.
func (c *Caller) peer(endpoint, holder string) (*peer, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("endpoint %q: want https://HOST:PORT", endpoint)
	}
	pk, err := protocol.ParseEd25519Key(holder)
	if err != nil {
		return nil, err
	}
	key := endpoint + " " + holder
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.peers[key]; ok {
		return p, nil
	}
	p := newPeer(pk, c.Dial, c.Now)
	if c.peers == nil {
		c.peers = map[string]*peer{}
	}
	c.peers[key] = p
	return p, nil
}

// newPeer makes a connection pool whose TLS certificates must be
// certified by pk.
func newPeer(pk ed25519.PublicKey, dial func(ctx context.Context, network, addr string) (net.Conn, error), now func() time.Time) *peer {
	if now == nil {
		now = time.Now
	}
	p := &peer{}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS13, ServerName: node.NodeServerName,
		InsecureSkipVerify: true, // replaced by VerifyConnection: the certificate must be certified by the platform key
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := pinned(cs, pk, now()); err != nil {
				return err
			}
			p.mu.Lock()
			p.cert = cs.PeerCertificates[0].Raw
			p.mu.Unlock()
			return nil
		},
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second, ResponseHeaderTimeout: 5 * time.Minute}
	if dial != nil {
		tr.DialContext = dial
	} else {
		d := &net.Dialer{Timeout: 10 * time.Second}
		tr.DialContext = d.DialContext
	}
	p.hc = &http.Client{Transport: tr}
	return p
}

// certificate returns the holder's verified TLS certificate, connecting
// (GET PathInfo) if no connection was made yet.
func (p *peer) certificate(ctx context.Context, endpoint string) ([]byte, error) {
	p.mu.Lock()
	cert := p.cert
	p.mu.Unlock()
	if cert != nil {
		return cert, nil
	}
	req, err := http.NewRequestWithContext(ctx, "GET", endpoint+PathInfo, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cert == nil {
		return nil, errors.New("no verified certificate")
	}
	return p.cert, nil
}

// ErrHolderIdentity: the node reached is not the one the ledger lists.
var ErrHolderIdentity = errors.New("federation: the node's TLS certificate is not certified by the platform key the ledger lists for it")

func pinned(cs tls.ConnectionState, pk ed25519.PublicKey, now time.Time) error {
	if len(cs.PeerCertificates) == 0 {
		return ErrHolderIdentity
	}
	leaf := cs.PeerCertificates[0]
	if leaf.SignatureAlgorithm != x509.PureEd25519 || !ed25519.Verify(pk, leaf.RawTBSCertificate, leaf.Signature) {
		return ErrHolderIdentity
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("%w: outside its validity window", ErrHolderIdentity)
	}
	return nil
}
