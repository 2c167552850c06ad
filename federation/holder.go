package federation

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/model"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/seal"
)

// Host is what a holder needs of its node (package node's *Node): its
// identity, the TLS certificate callers verify, ledger entries signed by
// its platform key, and runs in its isolates.
type Host interface {
	PlatformKey() ed25519.PublicKey
	Certificate() *x509.Certificate
	SignEntry(kind verify.Kind, body any) (*verify.SignedEntry, error)
	RunProgram(ctx context.Context, cfg *isolate.Config) (*isolate.Result, error)
}

// Ledger is what federation reads and writes on the ledger (a
// *client.Client).
type Ledger interface {
	Models(ctx context.Context) (*client.ModelList, error)
	Append(ctx context.Context, se *verify.SignedEntry) (verify.Receipt, error)
	AppendBatch(ctx context.Context, entries []*verify.SignedEntry, wait bool) ([]client.BatchResult, error)
	Get(ctx context.Context, index uint64) (*client.Entry, error)
}

// HolderOptions configures a Holder.
type HolderOptions struct {
	// Dir keeps the published programs and the local datasets.
	Dir    string
	Host   Host
	Ledger Ledger
	// Organisation is the consortium member key of the node's
	// organisation: only it publishes models and adds datasets here.
	Organisation ed25519.PublicKey
	// MaxConcurrent bounds the calls answered at once (0: 4); more are
	// refused as unavailable.
	MaxConcurrent int
	// RunTimeout bounds one sub-model's run (0: 30 s).
	RunTimeout time.Duration
	Logger     *slog.Logger
	Now        func() time.Time
}

// Holder keeps an organisation's programs and local datasets on its node
// and answers calls of its published models.
type Holder struct {
	o      HolderOptions
	me     string
	slot   chan struct{}
	plans  *plans
	outbox *outbox
	calls  *callLog
	progs  programCache
}

// NewHolder prepares a holder over opts.Dir.
func NewHolder(o HolderOptions) (*Holder, error) {
	if o.Host == nil || o.Ledger == nil || len(o.Organisation) != ed25519.PublicKeySize {
		return nil, errors.New("federation: a holder needs its node, a ledger and the node's organisation")
	}
	for _, d := range []string{"programs", "datasets"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("federation: %w", err)
		}
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 4
	}
	if o.RunTimeout <= 0 {
		o.RunTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	ps, err := openPlans(filepath.Join(o.Dir, "plans"))
	if err != nil {
		return nil, fmt.Errorf("federation: plans: %w", err)
	}
	ob, err := openOutbox(filepath.Join(o.Dir, "receipts"), o.Ledger, o.Logger)
	if err != nil {
		return nil, fmt.Errorf("federation: receipts: %w", err)
	}
	cl, err := openCallLog(filepath.Join(o.Dir, "calls"), ob, ps, o.Logger)
	if err != nil {
		ob.close()
		return nil, fmt.Errorf("federation: call log: %w", err)
	}
	return &Holder{o: o, me: protocol.FormatEd25519Key(o.Host.PlatformKey()), slot: make(chan struct{}, o.MaxConcurrent), plans: ps, outbox: ob,
		calls: cl, progs: programCache{dir: filepath.Join(o.Dir, "programs")}}, nil
}

// Close stops committing receipts; those not committed yet are sent when
// a holder opens the same directory again, as are the calls answered
// whose records were not applied yet.
func (h *Holder) Close() {
	h.calls.close()
	h.outbox.close()
}

// Mounter is where a holder's handlers are served (a *node.Node).
type Mounter interface {
	Mount(pattern string, h http.Handler)
}

// Mount serves the holder's paths on m.
func (h *Holder) Mount(m Mounter) {
	m.Mount("GET "+PathInfo, http.HandlerFunc(h.handleInfo))
	m.Mount("POST "+PathModels, http.HandlerFunc(h.handlePublish))
	m.Mount("POST "+PathDataset, http.HandlerFunc(h.handleDataset))
	m.Mount("POST "+PathCall, http.HandlerFunc(h.handleCall))
	m.Mount("POST "+PathPlans, http.HandlerFunc(h.handlePlan))
	m.Mount("GET "+PathReceipts+"{id}", http.HandlerFunc(h.handleReceipt))
	m.Mount("POST "+PathApprovals+"/list", http.HandlerFunc(h.handleApprovals))
	m.Mount("POST "+PathApprovals, http.HandlerFunc(h.handleDecision))
}

func (h *Holder) handleInfo(w http.ResponseWriter, r *http.Request) {
	info := Info{PlatformKey: h.me, Organisation: protocol.FormatEd25519Key(h.o.Organisation)}
	if name := r.URL.Query().Get("model"); name != "" {
		if err := model.CheckName(name); err != nil {
			refuse(w, CodeBadRequest, "info: %v", err)
			return
		}
		l, err := h.o.Ledger.Models(r.Context())
		if err != nil {
			refuse(w, CodeUnavailable, "info: reading the ledger: %v", err)
			return
		}
		if m, _ := l.Model(name); m != nil {
			info.ModelVersion = m.Version
		}
	}
	writeJSON(w, http.StatusOK, info)
}

// handlePublish takes a model.published entry signed by the node's
// organisation, naming this node, and the program it publishes; it keeps
// the program and appends the entry to the ledger.
func (h *Holder) handlePublish(w http.ResponseWriter, r *http.Request) {
	body := http.MaxBytesReader(w, r.Body, verify.MaxEntryBytes+4+MaxProgram)
	var m model.Model
	se, ok := h.readOwner(w, body, model.KindPublished, &m, "publish")
	if !ok {
		return
	}
	if err := m.Check(); err != nil {
		refuse(w, CodeBadRequest, "publish: %v", err)
		return
	}
	if !m.Serves(h.me) {
		refuse(w, CodeBadRequest, "publish: model %s does not name this node (%s) among its nodes", m.Name, h.me)
		return
	}
	if err := CheckSchemas(&m); err != nil {
		refuse(w, CodeSchema, "publish: %v", err)
		return
	}
	path := filepath.Join(h.o.Dir, "programs", m.ProgramSHA256+".wasm")
	if err := receiveFile(body, path, m.ProgramSHA256, MaxProgram); err != nil {
		refuse(w, CodeBadRequest, "publish: program: %v", err)
		return
	}
	rc, err := h.o.Ledger.Append(r.Context(), se)
	if err != nil {
		refuse(w, CodeNotAllowed, "publish: the ledger refused the model: %v", err)
		return
	}
	h.o.Logger.Info("federation: model published", "model", m.Name, "version", m.Version, "index", rc.Index)
	writeJSON(w, http.StatusOK, map[string]any{"index": rc.Index, "height": rc.Height})
}

// CheckSchemas compiles every schema of m.
func CheckSchemas(m *model.Model) error {
	for _, f := range m.Functions {
		if _, err := CompileSchema(f.Params); err != nil {
			return fmt.Errorf("function %s params: %w", f.Name, err)
		}
		if _, err := CompileSchema(f.Result); err != nil {
			return fmt.Errorf("function %s result: %w", f.Name, err)
		}
	}
	for _, d := range m.Datasets {
		if _, err := CompileSchema(d.Schema); err != nil {
			return fmt.Errorf("dataset %s: %w", d.Name, err)
		}
	}
	return nil
}

// handleDataset takes a federation.dataset message signed by the node's
// organisation and the dataset's bytes, and keeps them as a local dataset.
func (h *Holder) handleDataset(w http.ResponseWriter, r *http.Request) {
	body := http.MaxBytesReader(w, r.Body, verify.MaxEntryBytes+4+MaxDataset)
	var d Dataset
	if _, ok := h.readOwner(w, body, KindDataset, &d, "dataset"); !ok {
		return
	}
	if err := model.CheckDatasetName(d.Name); err != nil {
		refuse(w, CodeBadRequest, "dataset: %v", err)
		return
	}
	if d.Size < 0 || d.Size > MaxDataset || len(d.SHA256) != 64 {
		refuse(w, CodeBadRequest, "dataset: size 0 to %d bytes and a sha256 of 64 hex digits", int64(MaxDataset))
		return
	}
	if err := receiveFile(io.LimitReader(body, d.Size+1), filepath.Join(h.o.Dir, "datasets", d.Name), d.SHA256, d.Size); err != nil {
		refuse(w, CodeBadRequest, "dataset: %v", err)
		return
	}
	h.o.Logger.Info("federation: dataset added", "dataset", d.Name, "bytes", d.Size)
	writeJSON(w, http.StatusOK, map[string]any{"name": d.Name, "sha256": d.SHA256, "size": d.Size})
}

// readOwner reads a framed message of kind signed by the node's
// organisation into v, or refuses the request (what names it) and
// returns false.
func (h *Holder) readOwner(w http.ResponseWriter, body io.Reader, kind string, v any, what string) (*verify.SignedEntry, bool) {
	se, err := readSigned(body, kind, v, h.o.Now())
	if err != nil {
		refuse(w, CodeBadRequest, "%s: %v", what, err)
		return nil, false
	}
	if err := h.fromOrganisation(se); err != nil {
		refuse(w, CodeNotAllowed, "%s: %v", what, err)
		return nil, false
	}
	return se, true
}

func (h *Holder) fromOrganisation(se *verify.SignedEntry) error {
	if se.Entry.Submitter != protocol.FormatEd25519Key(h.o.Organisation) {
		return fmt.Errorf("signed by %s; this node's organisation is %s", se.Entry.Submitter, protocol.FormatEd25519Key(h.o.Organisation))
	}
	return nil
}

// receiveFile writes r's bytes (at most limit) to path atomically if
// their SHA-256 is want.
func receiveFile(r io.Reader, path, want string, limit int64) error {
	f, err := atomicfile.Create(path, 0o600)
	if err != nil {
		return err
	}
	defer f.Abort()
	hs := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, hs), io.LimitReader(r, limit+1))
	if err != nil {
		return err
	}
	if n > limit {
		return fmt.Errorf("more than %d bytes", limit)
	}
	if got := hex.EncodeToString(hs.Sum(nil)); got != want {
		return fmt.Errorf("the bytes received have SHA-256 %s, not %s", got, want)
	}
	return f.Commit()
}

// handleCall answers one call (see the package comment).
func (h *Holder) handleCall(w http.ResponseWriter, r *http.Request) {
	select {
	case h.slot <- struct{}{}:
		defer func() { <-h.slot }()
	default:
		refuse(w, CodeUnavailable, "call: this node answers %d calls at once; try again", cap(h.slot))
		return
	}
	st := steps{t: time.Now()}
	body := http.MaxBytesReader(w, r.Body, verify.MaxEntryBytes+4)
	var c Call
	se, err := readSigned(body, KindCall, &c, h.o.Now())
	if err != nil {
		refuse(w, CodeBadRequest, "call: %v", err)
		return
	}
	st.lap(&st.read)
	rep, receipt, rerr := h.answer(r.Context(), se, &c, &st)
	if rerr != nil {
		h.o.Logger.Info("federation: call refused", "model", c.Model, "function", c.Function, "caller", se.Entry.Submitter, "code", rerr.Code, "reason", rerr.Message)
		refuse(w, rerr.Code, "%s", rerr.Message)
		return
	}
	writeJSON(w, http.StatusOK, rep)
	// The receipt goes to the ledger once the reply is out: committing
	// it (a block) must not compete with the reply for the processor.
	// It is on disk already; a crash before this line leaves it pending,
	// and the next start sends it.
	http.NewResponseController(w).Flush()
	h.outbox.send(c.ID, receipt)
	st.lap(&st.reply)
	if h.o.Logger.Enabled(r.Context(), slog.LevelDebug) {
		h.o.Logger.Debug("federation: call answered", "call", c.ID, "model", c.Model, "function", c.Function,
			"read_us", st.read.Microseconds(), "audit_us", st.audit.Microseconds(), "run_us", st.run.Microseconds(),
			"seal_us", st.seal.Microseconds(), "kept_us", st.kept.Microseconds(), "reply_us", st.reply.Microseconds(), "total_us", st.total().Microseconds())
	}
}

// steps times one call's steps on either side, for the debug log (the
// benchmark reads it: bench/federation).
type steps struct {
	start, t                          time.Time
	read, audit, run, seal, kept      time.Duration // holder
	models, prepare, exchange, opened time.Duration // caller
	reply                             time.Duration
}

// lap adds the time since the last lap to *d.
func (s *steps) lap(d *time.Duration) {
	now := time.Now()
	if s.start.IsZero() {
		s.start = s.t
	}
	*d += now.Sub(s.t)
	s.t = now
}

func (s *steps) total() time.Duration { return s.t.Sub(s.start) }

func refused(code, format string, args ...any) *RefusedError {
	return &RefusedError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// answer checks and answers call c, signed as se; the receipt it returns
// is on disk, and the caller of answer queues it for the ledger once the
// reply is sent.
func (h *Holder) answer(ctx context.Context, se *verify.SignedEntry, c *Call, st *steps) (*Reply, *verify.SignedEntry, *RefusedError) {
	// The call is meant for this node, over the connection the caller
	// verified.
	if c.Holder != h.me {
		return nil, nil, refused(CodeBadRequest, "call: meant for node %s, not this node (%s)", c.Holder, h.me)
	}
	if cert := h.o.Host.Certificate(); cert == nil || c.HolderCert != digest(cert.Raw) {
		return nil, nil, refused(CodeBadRequest, "call: bound to another TLS certificate than this node's")
	}
	if len(c.ID) != 64 || len(c.Args) > MaxArgs || c.ArgsSHA256 != digest(c.Args) {
		return nil, nil, refused(CodeBadRequest, "call: id, arguments (at most %d bytes) or their digest malformed", MaxArgs)
	}
	if h.outbox.seen(c.ID) {
		return nil, nil, refused(CodeNotAllowed, "call: call %s was answered before: a replayed call", c.ID)
	}
	reply, err := seal.ParsePublicKey(c.ReplyKey)
	if err != nil {
		return nil, nil, refused(CodeBadRequest, "call: reply key: %v", err)
	}
	// What the ledger says of the model, now: published, live, this
	// version, served here, this initiator.
	m, rerr := h.liveModel(ctx, c.Model, c.Version, c.Initiator)
	if rerr != nil {
		rerr.Message = "call: " + rerr.Message
		return nil, nil, rerr
	}
	fn, ok := m.Function(c.Function)
	if !ok {
		return nil, nil, refused(CodeNotServed, "call: model %s publishes no function %q", c.Model, c.Function)
	}
	params, err := compiledSchema(fn.Params)
	if err != nil {
		return nil, nil, refused(CodeSchema, "call: the published params schema of %s: %v", c.Function, err)
	}
	if err := validate(params, c.Args); err != nil {
		return nil, nil, refused(CodeSchema, "call: arguments of %s.%s %v", c.Model, c.Function, err)
	}
	// An approved plan the exact call fits; in automatic mode the
	// allow-list stands for one when none does.
	plan, perr := h.plans.fit(c, h.o.Now())
	if perr != nil && m.Approval.Mode == model.ApprovalManual {
		return nil, nil, refused(CodePlan, "call: %s.%s fits no plan the owner approved: %v", c.Model, c.Function, perr)
	}
	st.lap(&st.audit)
	res, rows, rerr := h.run(ctx, &m.Model, fn, c)
	if rerr != nil {
		return nil, nil, rerr
	}
	st.lap(&st.run)
	if rows < m.Output.MinRows {
		return nil, nil, refused(CodeOutputRule, "call: output rule of %s: the result aggregates %d rows, fewer than %d", c.Model, rows, m.Output.MinRows)
	}
	plain, _ := json.Marshal(sealedResult{Result: res, Rows: rows})
	sealed, err := seal.Seal(reply, plain, resultInfo, []byte(c.ID))
	if err != nil {
		return nil, nil, refused(CodeFailed, "call: sealing the result: %v", err)
	}
	st.lap(&st.seal)
	// The call counts against its plan and the initiator's budget
	// before anything leaves.
	rec, err := h.plans.reserve(c, plan, m.Output.Budget)
	if err != nil {
		return nil, nil, refused(CodePlan, "call: %v", err)
	}
	// The receipt, signed, and the counts, on this node's disk before the
	// result leaves, as one record of the call log made durable with one
	// fdatasync (decision 0168); the record also claims the call id (the
	// replay guard). The ledger takes the receipt in the background
	// (decision 0125).
	receipt := model.Call{ID: c.ID, Model: c.Model, Version: c.Version, Function: c.Function, ArgsSHA256: c.ArgsSHA256,
		ResultSHA256: digest(sealed), Rows: rows, Caller: se.Entry.Submitter, Initiator: c.Initiator, Workflow: c.Workflow, Plan: plan}
	rse, err := h.o.Host.SignEntry(model.KindCalled, receipt)
	if err != nil {
		return nil, nil, refused(CodeFailed, "call: signing the receipt: %v", err)
	}
	rec.Receipt = rse.Encode()
	switch err := h.calls.append(rec, rse); {
	case errors.Is(err, errReplayed):
		return nil, nil, refused(CodeNotAllowed, "call: call %s was answered before: a replayed call", c.ID)
	case err != nil:
		return nil, nil, refused(CodeUnavailable, "call: keeping the call's receipt and counts: %v", err)
	}
	st.lap(&st.kept)
	return &Reply{Sealed: sealed, Entry: rse.Encode()}, rse, nil
}

// run runs the model's program on the function's datasets: /input/call.json
// holds {"function","args"}; the program writes /output/result.json,
// {"rows":N,"result":…}, which must satisfy the function's result schema.
func (h *Holder) run(ctx context.Context, m *model.Model, fn *model.Function, c *Call) (json.RawMessage, uint64, *RefusedError) {
	prog, err := h.progs.get(m.ProgramSHA256)
	if errors.Is(err, errNoProgram) {
		return nil, 0, refused(CodeNotServed, "call: this node does not hold model %s's program", m.Name)
	}
	if err != nil {
		return nil, 0, refused(CodeFailed, "call: the program this node holds for %s is not the published one", m.Name)
	}
	callJSON, _ := json.Marshal(map[string]any{"function": c.Function, "args": c.Args})
	cfg := &isolate.Config{Module: prog, Name: m.Name, Timeout: h.o.RunTimeout, MaxOutput: MaxResult, MaxOutputFiles: 1,
		Inputs: []isolate.Input{{Name: "call.json", Data: callJSON}}}
	for _, d := range fn.Datasets {
		p := filepath.Join(h.o.Dir, "datasets", d)
		if _, err := os.Stat(p); err != nil {
			return nil, 0, refused(CodeFailed, "call: dataset %s of %s is not on this node", d, m.Name)
		}
		cfg.Inputs = append(cfg.Inputs, isolate.Input{Name: d, Path: p})
	}
	rctx, cancel := context.WithTimeout(ctx, h.o.RunTimeout+time.Minute)
	defer cancel()
	res, err := h.o.Host.RunProgram(rctx, cfg)
	if err != nil {
		return nil, 0, refused(CodeFailed, "call: running %s: %v", m.Name, err)
	}
	defer res.Close()
	if res.Report.Outcome != isolate.OutcomeExited || res.Report.ExitCode != 0 {
		return nil, 0, refused(CodeFailed, "call: %s.%s ended %s with status %d: %s", m.Name, c.Function, res.Report.Outcome, res.Report.ExitCode, lastLine(res.Stderr))
	}
	var out []byte
	for _, o := range res.Outputs {
		if o.Name == "result.json" {
			if out, err = o.Bytes(); err != nil {
				return nil, 0, refused(CodeFailed, "call: reading the result: %v", err)
			}
		}
	}
	var r struct {
		Rows   *uint64         `json:"rows"`
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.Rows == nil || len(r.Result) == 0 {
		return nil, 0, refused(CodeFailed, "call: %s.%s wrote no /output/result.json of the form {\"rows\":N,\"result\":…}", m.Name, c.Function)
	}
	rs, err := compiledSchema(fn.Result)
	if err != nil {
		return nil, 0, refused(CodeSchema, "call: the published result schema of %s: %v", c.Function, err)
	}
	if err := validate(rs, r.Result); err != nil {
		return nil, 0, refused(CodeSchema, "call: the result of %s.%s %v; it is not released", m.Name, c.Function, err)
	}
	return r.Result, *r.Rows, nil
}

func lastLine(b []byte) string {
	s := string(b)
	if len(s) > 300 {
		s = s[len(s)-300:]
	}
	return s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func refuse(w http.ResponseWriter, code, format string, args ...any) {
	status := http.StatusForbidden
	switch code {
	case CodeBadRequest, CodeSchema:
		status = http.StatusBadRequest
	case CodeNotServed:
		status = http.StatusNotFound
	case CodeFailed:
		status = http.StatusUnprocessableEntity
	case CodeUnavailable:
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, errorBody{Error: fmt.Sprintf(format, args...), Code: code})
}
