package federation_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cloisterhq/cloister/console"
	"github.com/cloisterhq/cloister/federation"
	"github.com/cloisterhq/cloister/internal/browsertest"
	"github.com/cloisterhq/cloister/ledger/model"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// The owner's console lists a plan awaiting a person, in a real browser:
// its model, functions with their limits, budget and expiry, and the
// command that decides it; the page loads nothing from elsewhere and has
// no serious accessibility violation. The console decides nothing.
func TestPlansConsoleInBrowser(t *testing.T) {
	chrome := browsertest.Chromium(t)
	w := newWorldWith(t, 20, func(m *model.Model) { m.Approval.Mode = model.ApprovalManual }, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	plan := federation.Plan{Model: "hospital-a/stats", Version: 1, Total: strings.Repeat("7a", 32), Calls: 3,
		Functions: []federation.PlanFunction{{Name: "count", Args: json.RawMessage(`{"properties":{"column":{"const":"age"}}}`)}},
		Expires:   verify.FormatTime(time.Now().Add(time.Hour)), Note: "<script>alert(1)</script>"}
	rec, err := w.admin.SubmitPlan(ctx, w.initKey, &plan)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := console.New(console.Options{Node: w.holderNode, Ledger: w.lc, Sections: []console.Section{w.holder.ConsoleSection()}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(cs.Handler())
	defer srv.Close()

	bctx, requested := browsertest.Start(ctx, t, chrome)
	if err := chromedp.Do(bctx, chromedp.Navigate(srv.URL+"/ui/plans"), chromedp.WaitReady(chromedp.CSS("footer"))); err != nil {
		t.Fatal(err)
	}
	text, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("main")))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Awaiting a person (1)", rec.ID, "hospital-a/stats version 1", "0 of 3 calls used", plan.Expires,
		"cloister approval grant --node URL --key ORGANISATION.key " + rec.ID, `{"properties":{"column":{"const":"age"}}}`, "<script>alert(1)</script>"} {
		if !strings.Contains(text, want) {
			t.Fatalf("the plans page lacks %q:\n%s", want, text)
		}
	}
	title, err := chromedp.Run(bctx, chromedp.Evaluate[string]("document.title"))
	if err != nil || !strings.HasPrefix(title, "Plans") {
		t.Fatalf("title %q %v", title, err)
	}
	axe, err := os.ReadFile(filepath.Join("..", "console", "testdata", "axe-core", "axe.min.js"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[any](string(axe)+";null")); err != nil {
		t.Fatalf("axe-core: %v", err)
	}
	out, err := chromedp.Run(bctx, chromedp.Evaluate[string](`(async () => JSON.stringify((await axe.run(document,{resultTypes:["violations"]})).violations.filter(v=>v.impact==="serious"||v.impact==="critical").map(v=>v.id)))()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	if err := json.Unmarshal([]byte(out), &found); err != nil || len(found) > 0 {
		t.Fatalf("axe: %v %v", found, err)
	}
	for _, u := range requested() {
		if !strings.HasPrefix(u, srv.URL+"/") {
			t.Fatalf("the page requested %s, outside the console", u)
		}
	}
}
