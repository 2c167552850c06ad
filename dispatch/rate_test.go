package dispatch_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/dispatch"
	"github.com/cloisterhq/cloister/ledger/acl"
)

// TestDispatcherKeepsItsDelegationRate: the dispatcher does not assign a
// run whose grant its delegation's rate would make the ledger refuse (a
// refused grant would fail the assignment and count against a provider
// that did nothing wrong); each delegation is counted on its own, and
// the window slides.
func TestDispatcherKeepsItsDelegationRate(t *testing.T) {
	d := dispatch.NewForRate()
	r := &acl.Rate{Grants: 2, WindowSeconds: 60}
	t0 := time.Unix(1_800_000_000, 0)
	for i := range 2 {
		if err := d.RateAllows(7, r, t0); err != nil {
			t.Fatalf("grant %d: %v", i+1, err)
		}
		d.NoteGrant(7, t0.Add(time.Duration(i)*time.Second))
	}
	err := d.RateAllows(7, r, t0.Add(30*time.Second))
	if !errors.Is(err, acl.ErrExceeds) || !strings.Contains(err.Error(), "allows 2 grants in any 1m0s") {
		t.Fatalf("a third grant within the minute: %v", err)
	}
	if err := d.RateAllows(8, r, t0.Add(30*time.Second)); err != nil {
		t.Fatalf("another delegation: %v", err)
	}
	if err := d.RateAllows(7, r, t0.Add(59*time.Second)); err == nil {
		t.Fatal("59 s after the first grant, both are inside the window")
	}
	if err := d.RateAllows(7, r, t0.Add(60*time.Second)); err != nil {
		t.Fatalf("once the first grant left the window: %v", err)
	}
	if err := d.RateAllows(7, nil, t0); err != nil {
		t.Fatalf("no rate: %v", err)
	}
}
