package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/model"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Plans (decision 0124). An initiator asks an owner's node to approve a
// plan — the total model's SHA-256, the functions it will call with the
// limits their arguments must keep, a call budget and an expiry — in a
// federation.plan message signed with its principal key. The allow-list
// approves it at once when the model is in automatic approval mode; in
// manual mode it waits for a person of the owner, who grants or denies it
// with a federation.approval message signed by the organisation's key
// ('cloister approval grant|deny'). From then on the owner's node signs
// each exact call that fits an approved plan (its receipt names the plan)
// without anyone waiting, and refuses every other call with the reason.

// Kinds of the plans' signed messages (the ledger refuses them).
const (
	KindPlan      = "federation.plan"
	KindApproval  = "federation.approval"
	KindApprovals = "federation.approvals"
)

// Paths of the plans' services on an owner's node.
const (
	PathPlans     = "/v1/federation/plans"
	PathApprovals = "/v1/federation/approvals"
)

// CodePlan: the call fits no plan the owner approved (other function,
// arguments past their limits, budget spent, plan expired, pending or
// denied).
const CodePlan = "plan"

// Plan states.
const (
	PlanPending  = "pending"
	PlanApproved = "approved"
	PlanDenied   = "denied"
)

// ByAllowList is who approved a plan that the model's allow-list
// approved (automatic mode).
const ByAllowList = "allow-list"

// Bounds on plans.
const (
	MaxPlanLife       = 90 * 24 * time.Hour
	maxPlans          = 4096 // kept by one node
	maxPendingPlans   = 256  // awaiting a person, in all
	maxPendingPerInit = 16   // awaiting a person, per initiator
	maxPlanNote       = 1024
)

// Plan is the body of a federation.plan message, signed by the
// initiator: the total model whose SHA-256 is Total may call Functions of
// version Version of Model, at most Calls times in all, until Expires.
type Plan struct {
	Model     string         `json:"model"`
	Version   uint64         `json:"version"`
	Total     string         `json:"total_sha256"`
	Functions []PlanFunction `json:"functions"`
	Calls     uint64         `json:"calls"`
	Expires   string         `json:"expires"`
	Note      string         `json:"note,omitempty"`
}

// PlanFunction is one function a plan calls; Args, when set, is a JSON
// Schema its arguments must satisfy besides the published one: the
// limits the owner approves (ranges, allowed columns, fixed values).
type PlanFunction struct {
	Name string          `json:"name"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Decision is the body of a federation.approval message, signed by the
// owner organisation: grant or deny the plan whose id is Plan.
type Decision struct {
	Plan   string `json:"plan"`
	Grant  bool   `json:"grant"`
	Reason string `json:"reason,omitempty"`
}

// ApprovalsQuery is the body of a federation.approvals message, signed
// by the owner organisation: list the plans awaiting a person, or with
// All every plan the node keeps.
type ApprovalsQuery struct {
	All bool `json:"all,omitempty"`
}

// PlanRecord is a plan as the owner's node keeps it.
type PlanRecord struct {
	ID        string          `json:"id"`
	Initiator string          `json:"initiator"`
	Plan      Plan            `json:"plan"`
	Entry     json.RawMessage `json:"entry"` // the initiator's signed plan
	State     string          `json:"state"`
	By        string          `json:"by,omitempty"`       // the owner's key, or ByAllowList
	Decision  json.RawMessage `json:"decision,omitempty"` // the owner's signed decision
	Reason    string          `json:"reason,omitempty"`
	Received  string          `json:"received"`
	Used      uint64          `json:"used"` // calls answered under it
}

// Check checks p's shape at time now.
func (p *Plan) Check(now time.Time) error {
	if err := model.CheckName(p.Model); err != nil {
		return fmt.Errorf("plan model: %w", err)
	}
	if p.Version == 0 {
		return errors.New("plan version: want the model's current version")
	}
	if len(p.Total) != 64 || strings.Trim(p.Total, "0123456789abcdef") != "" {
		return errors.New("plan total_sha256: want the total model's SHA-256, 64 lower-case hex digits")
	}
	if len(p.Functions) == 0 || len(p.Functions) > model.MaxFunctions {
		return fmt.Errorf("plan functions: want 1 to %d", model.MaxFunctions)
	}
	seen := map[string]bool{}
	for _, f := range p.Functions {
		if err := model.CheckFunctionName(f.Name); err != nil {
			return fmt.Errorf("plan: %w", err)
		}
		if seen[f.Name] {
			return fmt.Errorf("plan function %q: named twice", f.Name)
		}
		seen[f.Name] = true
		if len(f.Args) > 0 {
			if len(f.Args) > model.MaxSchema {
				return fmt.Errorf("plan function %q args: %d bytes, limit %d", f.Name, len(f.Args), model.MaxSchema)
			}
			if _, err := CompileSchema(f.Args); err != nil {
				return fmt.Errorf("plan function %q args: %w", f.Name, err)
			}
		}
	}
	if p.Calls == 0 {
		return errors.New("plan calls: want a budget of 1 or more calls")
	}
	exp, err := time.Parse(verify.TimeLayout, p.Expires)
	if err != nil {
		return fmt.Errorf("plan expires: want a time such as %s", verify.FormatTime(now.Add(time.Hour)))
	}
	if !exp.After(now) || exp.Sub(now) > MaxPlanLife {
		return fmt.Errorf("plan expires %s: want a time after now and within %s", p.Expires, MaxPlanLife)
	}
	if len(p.Note) > maxPlanNote {
		return fmt.Errorf("plan note: at most %d bytes", maxPlanNote)
	}
	return nil
}

// function returns the plan's entry for function name.
func (p *Plan) function(name string) (*PlanFunction, bool) {
	for i := range p.Functions {
		if p.Functions[i].Name == name {
			return &p.Functions[i], true
		}
	}
	return nil, false
}

func (p *Plan) functionNames() string {
	names := make([]string, len(p.Functions))
	for i, f := range p.Functions {
		names[i] = f.Name
	}
	return strings.Join(names, ", ")
}

// plans keeps an owner's node's plans (dir/ID.json, one atomic file
// each) and the calls answered under each and per (model version,
// initiator): a call's count is written before its result leaves, so a
// crash can only lose budget, never grant more.
type plans struct {
	dir   string
	wmu   sync.Mutex // persistAll's writes, one at a time
	mu    sync.Mutex
	byID  map[string]*PlanRecord
	usage map[string]uint64 // usageKey -> calls answered (model budget)
}

func openPlans(dir string) (*plans, error) {
	for _, d := range []string{dir, filepath.Join(dir, "usage")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	ps := &plans{dir: dir, byID: map[string]*PlanRecord{}, usage: map[string]uint64{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			continue
		}
		var r PlanRecord
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, &r); err != nil || r.ID != id {
			return nil, fmt.Errorf("plan %s: unreadable record", e.Name())
		}
		ps.byID[id] = &r
	}
	uents, err := os.ReadDir(filepath.Join(dir, "usage"))
	if err != nil {
		return nil, err
	}
	for _, e := range uents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "usage", e.Name()))
		if err != nil {
			return nil, err
		}
		var n uint64
		if err := json.Unmarshal(b, &n); err != nil {
			return nil, fmt.Errorf("usage %s: unreadable", e.Name())
		}
		ps.usage[e.Name()] = n
	}
	return ps, nil
}

// usageKey names the calls of one initiator of one version of a model.
func usageKey(name string, version uint64, initiator string) string {
	return digest(fmt.Appendf(nil, "%s\x00%d\x00%s", name, version, initiator))
}

func (ps *plans) save(r *PlanRecord, opts ...atomicfile.Option) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(ps.dir, r.ID+".json"), b, 0o600, opts...)
}

// add keeps a new plan record.
func (ps *plans) add(r *PlanRecord) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if _, ok := ps.byID[r.ID]; ok {
		return fmt.Errorf("plan %s was submitted before", r.ID)
	}
	if len(ps.byID) >= maxPlans {
		return fmt.Errorf("this node keeps %d plans, its limit", maxPlans)
	}
	if r.State == PlanPending {
		all, mine := 0, 0
		for _, o := range ps.byID {
			if o.State == PlanPending {
				all++
				if o.Initiator == r.Initiator {
					mine++
				}
			}
		}
		if all >= maxPendingPlans || mine >= maxPendingPerInit {
			return fmt.Errorf("%d plans await a person (%d of this initiator); the limits are %d and %d", all, mine, maxPendingPlans, maxPendingPerInit)
		}
	}
	if err := ps.save(r, atomicfile.NoReplace()); err != nil {
		return err
	}
	ps.byID[r.ID] = r
	return nil
}

// decide records a person's decision on a pending plan.
func (ps *plans) decide(id, by string, d *Decision, entry []byte) (*PlanRecord, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	r, ok := ps.byID[id]
	if !ok {
		return nil, fmt.Errorf("no plan %s on this node", id)
	}
	if r.State != PlanPending {
		return nil, fmt.Errorf("plan %s is %s already", id, r.State)
	}
	n := *r
	n.State, n.By, n.Decision, n.Reason = PlanDenied, by, entry, d.Reason
	if d.Grant {
		n.State = PlanApproved
	}
	if err := ps.save(&n); err != nil {
		return nil, err
	}
	ps.byID[id] = &n
	return &n, nil
}

// list returns the plans, pending only unless all, oldest first.
func (ps *plans) list(all bool) []PlanRecord {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	out := []PlanRecord{}
	for _, r := range ps.byID {
		if all || r.State == PlanPending {
			out = append(out, *r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Received < out[j].Received || out[i].Received == out[j].Received && out[i].ID < out[j].ID
	})
	return out
}

// errNoPlan: no plan of the initiator fits; its message says why.
type errNoPlan struct{ reasons []string }

func (e *errNoPlan) Error() string { return strings.Join(e.reasons, "; ") }

// fit returns the id of an approved plan that c fits (of initiator for
// total, this version of the model, this function, arguments within the
// plan's limits, budget left, not expired), or an *errNoPlan with the
// reason each of the initiator's plans gave.
func (ps *plans) fit(c *Call, now time.Time) (string, error) {
	ps.mu.Lock()
	var mine []*PlanRecord
	for _, r := range ps.byID {
		if r.Initiator == c.Initiator && r.Plan.Model == c.Model {
			mine = append(mine, r)
		}
	}
	ps.mu.Unlock()
	sort.Slice(mine, func(i, j int) bool { return mine[i].ID < mine[j].ID })
	e := &errNoPlan{}
	for _, r := range mine {
		if err := r.fits(c, now); err != nil {
			e.reasons = append(e.reasons, fmt.Sprintf("plan %s: %v", r.ID[:16], err))
			continue
		}
		return r.ID, nil
	}
	if len(e.reasons) == 0 {
		e.reasons = append(e.reasons, fmt.Sprintf("initiator %s has no plan for %s on this node", c.Initiator, c.Model))
	}
	return "", e
}

func (r *PlanRecord) fits(c *Call, now time.Time) error {
	p := &r.Plan
	switch {
	case r.State != PlanApproved:
		return fmt.Errorf("it is %s, not approved", r.State)
	case p.Version != c.Version:
		return fmt.Errorf("it approves version %d of %s, not %d", p.Version, p.Model, c.Version)
	case p.Total != c.Total:
		return fmt.Errorf("it approves the total model %s, not %s", short(p.Total), short(c.Total))
	}
	if exp, _ := time.Parse(verify.TimeLayout, p.Expires); !now.Before(exp) {
		return fmt.Errorf("it expired at %s", p.Expires)
	}
	f, ok := p.function(c.Function)
	if !ok {
		return fmt.Errorf("it does not approve function %q (only %s)", c.Function, p.functionNames())
	}
	if r.Used >= p.Calls {
		return fmt.Errorf("its budget of %d calls is spent", p.Calls)
	}
	if len(f.Args) > 0 {
		s, err := compiledSchema(f.Args)
		if err != nil {
			return err
		}
		if err := validate(s, c.Args); err != nil {
			return fmt.Errorf("the arguments of %s are past its limits: %v", c.Function, err)
		}
	}
	return nil
}

func short(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	if s == "" {
		return "(none)"
	}
	return s
}

// reserve counts one call under plan (when not "") and under the
// initiator's budget of the model version, budget (0: none), refusing it
// when either is spent. The counts change in memory at once, so that
// calls made at the same time cannot both take the last one; the record
// it returns holds them as they are after this call, for the call log
// (the result may leave only once that record is durable). A count whose
// record failed stays counted in memory: the node then refuses sooner,
// never later.
func (ps *plans) reserve(c *Call, plan string, budget uint64) (*callRecord, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	uk := usageKey(c.Model, c.Version, c.Initiator)
	used := ps.usage[uk]
	if budget != 0 && used >= budget {
		return nil, fmt.Errorf("initiator %s spent its budget of %d calls of %s version %d", c.Initiator, budget, c.Model, c.Version)
	}
	rec := &callRecord{Call: c.ID, Usage: uk, Count: used + 1}
	if plan != "" {
		r := ps.byID[plan]
		if r.Used >= r.Plan.Calls {
			return nil, fmt.Errorf("plan %s: its budget of %d calls is spent", plan[:16], r.Plan.Calls)
		}
		n := *r
		n.Used++
		ps.byID[plan] = &n
		rec.Plan, rec.Used = plan, n.Used
	}
	ps.usage[uk] = used + 1
	return rec, nil
}

// atLeast raises the initiator's count uk to n and plan's (when not "")
// to used, in memory, if they are lower: a record of the call log read
// again.
func (ps *plans) atLeast(uk string, n uint64, plan string, used uint64) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.usage[uk] < n {
		ps.usage[uk] = n
	}
	if r := ps.byID[plan]; plan != "" && r != nil && r.Used < used {
		c := *r
		c.Used = used
		ps.byID[plan] = &c
	}
}

// persistAll writes the counts the records name — each initiator's and
// plan's once — as they are in memory now, which is at least what the
// records hold, their fsyncs overlapping. It takes the values under the
// lock and writes them without it (calls reserve meanwhile); its callers
// (the call log's replay, then its one applier) write one at a time, so
// a file never goes back. A plan record with calls counted is approved,
// and only its count changes after that.
func (ps *plans) persistAll(recs []*callRecord) error {
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	counts := map[string][]byte{}
	var records []*PlanRecord
	ps.mu.Lock()
	for _, r := range recs {
		if _, ok := counts[r.Usage]; !ok {
			counts[r.Usage], _ = json.Marshal(ps.usage[r.Usage])
		}
		if pr := ps.byID[r.Plan]; r.Plan != "" && pr != nil && !slices.Contains(records, pr) {
			records = append(records, pr)
		}
	}
	ps.mu.Unlock()
	errs := make(chan error, len(counts)+len(records))
	var wg sync.WaitGroup
	for _, r := range records {
		wg.Go(func() { errs <- ps.save(r) })
	}
	for uk, b := range counts {
		wg.Go(func() { errs <- atomicfile.WriteFile(filepath.Join(ps.dir, "usage", uk), b, 0o600) })
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// handlePlan takes a federation.plan signed by an initiator: the model
// must be live and served here, the initiator on its allow-list, every
// function published. In automatic mode the allow-list approves it at
// once; in manual mode it awaits a person.
func (h *Holder) handlePlan(w http.ResponseWriter, r *http.Request) {
	body := http.MaxBytesReader(w, r.Body, verify.MaxEntryBytes+4)
	var p Plan
	now := h.o.Now()
	se, err := readSigned(body, KindPlan, &p, now)
	if err != nil {
		refuse(w, CodeBadRequest, "plan: %v", err)
		return
	}
	if err := p.Check(now); err != nil {
		refuse(w, CodeBadRequest, "plan: %v", err)
		return
	}
	m, rerr := h.liveModel(r.Context(), p.Model, p.Version, se.Entry.Submitter)
	if rerr != nil {
		refuse(w, rerr.Code, "plan: %s", rerr.Message)
		return
	}
	for _, f := range p.Functions {
		if _, ok := m.Function(f.Name); !ok {
			refuse(w, CodeNotServed, "plan: model %s publishes no function %q", p.Model, f.Name)
			return
		}
	}
	if m.Output.Budget != 0 && p.Calls > m.Output.Budget {
		refuse(w, CodeBadRequest, "plan: %d calls, more than model %s's budget of %d per initiator", p.Calls, p.Model, m.Output.Budget)
		return
	}
	rec := &PlanRecord{ID: digest(se.Encode()), Initiator: se.Entry.Submitter, Plan: p, Entry: se.Encode(), State: PlanPending, Received: verify.FormatTime(now)}
	if m.Approval.Mode != model.ApprovalManual {
		rec.State, rec.By = PlanApproved, ByAllowList
	}
	if err := h.plans.add(rec); err != nil {
		refuse(w, CodeUnavailable, "plan: %v", err)
		return
	}
	h.o.Logger.Info("federation: plan received", "plan", rec.ID, "model", p.Model, "initiator", rec.Initiator, "state", rec.State)
	writeJSON(w, http.StatusOK, rec)
}

// liveModel reads model name on the ledger: published at version, not
// revoked, served here, initiator on its allow-list.
func (h *Holder) liveModel(ctx context.Context, name string, version uint64, initiator string) (*client.PublishedModel, *RefusedError) {
	l, err := h.o.Ledger.Models(ctx)
	if err != nil {
		return nil, refused(CodeUnavailable, "reading the ledger: %v", err)
	}
	m, err := l.Model(name)
	if err != nil {
		return nil, refused(CodeNotServed, "%v", err)
	}
	switch {
	case m.Version != version:
		return nil, refused(CodeNotServed, "model %s is at version %d, not %d", name, m.Version, version)
	case !m.Serves(h.me):
		return nil, refused(CodeNotServed, "this node does not serve model %s", name)
	case !m.Allows(initiator):
		return nil, refused(CodeNotAllowed, "initiator %s is not on model %s's allow-list", initiator, name)
	}
	return m, nil
}

// handleApprovals answers the owner's signed federation.approvals: the
// plans awaiting a person (or all).
func (h *Holder) handleApprovals(w http.ResponseWriter, r *http.Request) {
	var q ApprovalsQuery
	if _, ok := h.readOwner(w, http.MaxBytesReader(w, r.Body, verify.MaxEntryBytes+4), KindApprovals, &q, "approvals"); !ok {
		return
	}
	writeJSON(w, http.StatusOK, h.plans.list(q.All))
}

// handleDecision takes the owner's signed federation.approval.
func (h *Holder) handleDecision(w http.ResponseWriter, r *http.Request) {
	var d Decision
	se, ok := h.readOwner(w, http.MaxBytesReader(w, r.Body, verify.MaxEntryBytes+4), KindApproval, &d, "approval")
	if !ok {
		return
	}
	if len(d.Reason) > maxPlanNote {
		refuse(w, CodeBadRequest, "approval: reason of at most %d bytes", maxPlanNote)
		return
	}
	rec, err := h.plans.decide(d.Plan, se.Entry.Submitter, &d, se.Encode())
	if err != nil {
		refuse(w, CodeBadRequest, "approval: %v", err)
		return
	}
	h.o.Logger.Info("federation: plan decided", "plan", rec.ID, "state", rec.State, "by", rec.By)
	writeJSON(w, http.StatusOK, rec)
}

// SubmitPlan signs p with the initiator's key and submits it to the
// owner's node; the record says whether it is approved or awaits a
// person.
func (a *Admin) SubmitPlan(ctx context.Context, initiator ed25519.PrivateKey, p *Plan) (*PlanRecord, error) {
	var out PlanRecord
	return &out, a.postSigned(ctx, initiator, PathPlans, KindPlan, p, &out)
}

// Approvals lists the plans on the owner's node awaiting a person (all:
// every plan), asked with the owner organisation's key.
func (a *Admin) Approvals(ctx context.Context, owner ed25519.PrivateKey, all bool) ([]PlanRecord, error) {
	var out []PlanRecord
	return out, a.postSigned(ctx, owner, PathApprovals+"/list", KindApprovals, ApprovalsQuery{All: all}, &out)
}

// Decide grants or denies a pending plan with the owner organisation's
// key.
func (a *Admin) Decide(ctx context.Context, owner ed25519.PrivateKey, d *Decision) (*PlanRecord, error) {
	var out PlanRecord
	return &out, a.postSigned(ctx, owner, PathApprovals, KindApproval, d, &out)
}

func (a *Admin) postSigned(ctx context.Context, k ed25519.PrivateKey, path string, kind verify.Kind, body, out any) error {
	se, err := verify.NewEntry(k, kind, body)
	if err != nil {
		return err
	}
	return a.post(ctx, path, bytes.NewReader(frame(se)), out)
}
