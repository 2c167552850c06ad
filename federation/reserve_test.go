package federation

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// Calls made at the same time each take one count in memory at once, so
// exactly the budget's worth of them is answered; the writes of their
// counts leave on disk what was counted, plan and budget alike, also when
// a later call's write was made first.
func TestReserveConcurrent(t *testing.T) {
	dir := t.TempDir()
	ps, err := openPlans(dir)
	if err != nil {
		t.Fatal(err)
	}
	initiator := strings.Repeat("i", 8)
	rec := &PlanRecord{ID: strings.Repeat("ab", 32), Initiator: initiator, State: PlanApproved,
		Plan: Plan{Model: "hospital-a/stats", Version: 1, Calls: 7, Functions: []PlanFunction{{Name: "count"}},
			Expires: verify.FormatTime(time.Now().Add(time.Hour))}}
	if err := ps.add(rec); err != nil {
		t.Fatal(err)
	}
	c := &Call{Model: "hospital-a/stats", Version: 1, Function: "count", Initiator: initiator}
	const budget = 5
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		answered int
		refused  []string
	)
	for range 12 {
		wg.Go(func() {
			r, err := ps.reserve(c, rec.ID, budget)
			if err == nil {
				err = ps.persistAll([]*callRecord{r})
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				refused = append(refused, err.Error())
				return
			}
			answered++
		})
	}
	wg.Wait()
	if answered != budget || len(refused) != 12-budget {
		t.Fatalf("%d answered, %d refused, want %d and %d", answered, len(refused), budget, 12-budget)
	}
	for _, r := range refused {
		if !strings.Contains(r, "spent its budget of 5 calls") {
			t.Fatalf("refusal %q", r)
		}
	}
	again, err := openPlans(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := again.usage[usageKey(c.Model, c.Version, initiator)]; got != budget {
		t.Fatalf("budget count on disk %d, want %d", got, budget)
	}
	if got := again.byID[rec.ID].Used; got != budget {
		t.Fatalf("plan count on disk %d, want %d", got, budget)
	}
	// The plan's own budget: 7 calls, 5 used; with no model budget two
	// more are answered, then the plan refuses.
	for i := range 3 {
		r, err := again.reserve(c, rec.ID, 0)
		if i < 2 && (err != nil || again.persistAll([]*callRecord{r}) != nil) {
			t.Fatalf("call %d under the plan: %v", i, err)
		}
		if i == 2 && (err == nil || !strings.Contains(err.Error(), "its budget of 7 calls is spent")) {
			t.Fatalf("call past the plan's budget: %v", err)
		}
	}
}
