package federation_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/federation"
	"github.com/cloisterhq/cloister/ledger/model"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// A model in manual approval mode answers only calls that fit a plan a
// person of the owner approved: every call outside it — no plan, a plan
// still pending or denied, another total model, another function,
// arguments past the plan's limits, its budget spent, the plan expired —
// is refused with the reason, and each answered call's receipt names its
// plan on the ledger.
func TestPlansApprovedByAPerson(t *testing.T) {
	w := newWorldWith(t, 40, func(m *model.Model) { m.Approval.Mode = model.ApprovalManual }, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	total := strings.Repeat("7a", 32)
	origin := federation.Origin{Initiator: w.initiator, Total: total, Workflow: testWorkflow}
	call := func(o federation.Origin, fn string, args string) (*federation.Answer, error) {
		return w.caller.Call(ctx, o, &federation.Request{Model: "hospital-a/stats", Function: fn, Args: json.RawMessage(args)})
	}
	countAll := `{"column":"age","op":">=","value":0}`

	_, err := call(origin, "count", countAll)
	wantRefused(t, err, federation.CodePlan, "has no plan")

	// The initiator asks; the plan waits for a person.
	plan := federation.Plan{Model: "hospital-a/stats", Version: 1, Total: total, Calls: 3,
		Functions: []federation.PlanFunction{{Name: "count", Args: json.RawMessage(`{"properties":{"column":{"const":"age"}}}`)}, {Name: "gradient"}},
		Expires:   verify.FormatTime(time.Now().Add(time.Hour))}
	bad := plan
	bad.Functions = []federation.PlanFunction{{Name: "export"}}
	if _, err := w.admin.SubmitPlan(ctx, w.initKey, &bad); err == nil || !strings.Contains(err.Error(), `publishes no function "export"`) {
		t.Fatalf("plan of an unpublished function: %v", err)
	}
	bad = plan
	bad.Calls = 13
	if _, err := w.admin.SubmitPlan(ctx, w.initKey, &bad); err == nil || !strings.Contains(err.Error(), "budget of 12") {
		t.Fatalf("plan past the model's budget: %v", err)
	}
	if _, err := w.admin.SubmitPlan(ctx, newKey(t), &plan); err == nil || !strings.Contains(err.Error(), "allow-list") {
		t.Fatalf("plan of a stranger: %v", err)
	}
	rec, err := w.admin.SubmitPlan(ctx, w.initKey, &plan)
	if err != nil || rec.State != federation.PlanPending || len(rec.ID) != 64 {
		t.Fatalf("plan: %+v %v", rec, err)
	}
	_, err = call(origin, "count", countAll)
	wantRefused(t, err, federation.CodePlan, "pending, not approved")

	// Only the owner lists and decides.
	if _, err := w.admin.Approvals(ctx, w.initKey, false); err == nil || !strings.Contains(err.Error(), "organisation") {
		t.Fatalf("approvals listed by the initiator: %v", err)
	}
	if _, err := w.admin.Decide(ctx, w.initKey, &federation.Decision{Plan: rec.ID, Grant: true}); err == nil {
		t.Fatal("the initiator approved its own plan")
	}
	pending, err := w.admin.Approvals(ctx, w.org, false)
	if err != nil || len(pending) != 1 || pending[0].ID != rec.ID || pending[0].Initiator != w.initiator {
		t.Fatalf("approvals: %+v %v", pending, err)
	}
	granted, err := w.admin.Decide(ctx, w.org, &federation.Decision{Plan: rec.ID, Grant: true})
	if err != nil || granted.State != federation.PlanApproved || granted.By != pub(w.org) {
		t.Fatalf("grant: %+v %v", granted, err)
	}
	if _, err := w.admin.Decide(ctx, w.org, &federation.Decision{Plan: rec.ID, Grant: false}); err == nil || !strings.Contains(err.Error(), "approved already") {
		t.Fatalf("second decision: %v", err)
	}

	// Under the plan: answered, the receipt names it.
	a, err := call(origin, "count", countAll)
	if err != nil {
		t.Fatalf("count under the plan: %v\n%s", err, w.logs)
	}
	w.wantReceiptPlan(a, rec.ID)

	// Outside it.
	_, err = call(origin, "histogram", `{"column":"age","edges":[0,50,100]}`)
	wantRefused(t, err, federation.CodePlan, `does not approve function "histogram"`)
	_, err = call(origin, "count", `{"column":"outcome","op":"==","value":1}`)
	wantRefused(t, err, federation.CodePlan, "past its limits")
	_, err = call(federation.Origin{Initiator: w.initiator, Total: strings.Repeat("7b", 32)}, "count", countAll)
	wantRefused(t, err, federation.CodePlan, "approves the total model")
	for i := 0; i < 2; i++ {
		if _, err := call(origin, "count", countAll); err != nil {
			t.Fatal(err)
		}
	}
	_, err = call(origin, "count", countAll)
	wantRefused(t, err, federation.CodePlan, "budget of 3 calls is spent")

	// A denied plan, and an expired one.
	plan.Total = strings.Repeat("7c", 32)
	rec2, err := w.admin.SubmitPlan(ctx, w.initKey, &plan)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.admin.Decide(ctx, w.org, &federation.Decision{Plan: rec2.ID, Reason: "not for this study"}); err != nil {
		t.Fatal(err)
	}
	o2 := federation.Origin{Initiator: w.initiator, Total: plan.Total}
	_, err = call(o2, "count", countAll)
	wantRefused(t, err, federation.CodePlan, "denied, not approved")
	plan.Total = strings.Repeat("7d", 32)
	plan.Expires = verify.FormatTime(time.Now().Add(1500 * time.Millisecond))
	rec3, err := w.admin.SubmitPlan(ctx, w.initKey, &plan)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.admin.Decide(ctx, w.org, &federation.Decision{Plan: rec3.ID, Grant: true}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(time.Now().Add(1600 * time.Millisecond)))
	_, err = call(federation.Origin{Initiator: w.initiator, Total: plan.Total}, "count", countAll)
	wantRefused(t, err, federation.CodePlan, "expired at")
}

// In automatic mode a plan is approved by the allow-list at once, and the
// calls that fit it name it in their receipts.
func TestPlanApprovedByTheAllowList(t *testing.T) {
	w := newWorld(t, 30)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	total := strings.Repeat("5e", 32)
	rec, err := w.admin.SubmitPlan(ctx, w.initKey, &federation.Plan{Model: "hospital-a/stats", Version: 1, Total: total, Calls: 2,
		Functions: []federation.PlanFunction{{Name: "count"}}, Expires: verify.FormatTime(time.Now().Add(time.Hour))})
	if err != nil || rec.State != federation.PlanApproved || rec.By != federation.ByAllowList {
		t.Fatalf("plan: %+v %v", rec, err)
	}
	a, err := w.caller.Call(ctx, federation.Origin{Initiator: w.initiator, Total: total, Workflow: testWorkflow},
		&federation.Request{Model: "hospital-a/stats", Function: "count", Args: json.RawMessage(`{"column":"age","op":">=","value":0}`)})
	if err != nil {
		t.Fatal(err)
	}
	w.wantReceiptPlan(a, rec.ID)
}

func (w *world) wantReceiptPlan(a *federation.Answer, plan string) {
	w.t.Helper()
	e := w.receipt(a, testWorkflow)
	c, err := model.DecodeCall(e.Signed.Entry.Body)
	if err != nil || c.Plan != plan {
		w.t.Fatalf("receipt %d names plan %q, want %s (%v)", e.Index, c.Plan, plan, err)
	}
}
