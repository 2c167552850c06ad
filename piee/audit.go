package piee

import (
	"context"
	"fmt"
	"time"

	"github.com/cloisterhq/cloister/ledger/challenge"
	lclient "github.com/cloisterhq/cloister/ledger/client"
)

// Finding is one challenge of an epoch as the ledger shows it and as the
// audit recomputes it.
type Finding struct {
	Epoch    uint64 `json:"epoch"`
	Node     string `json:"node"`
	Operator string `json:"operator"`
	Class    string `json:"class"`
	// Recorded is the piee.verdict on the ledger (nil: none yet).
	Recorded *challenge.Verdict `json:"recorded,omitempty"`
	// Recomputed is challenge.Tally of the epoch's signed reveals, here.
	Recomputed challenge.Verdict `json:"recomputed"`
	// Agrees says the recorded verdict is the recomputed one.
	Agrees bool `json:"agrees"`
}

// Audit recomputes every challenge's verdict of an epoch that
// lclient.Client.PieeEpoch fetched (and checked: signatures, beacon,
// draw) from its signed reveals alone, and sets it beside the verdict the
// ledger recorded.
func Audit(ep *lclient.PieeEpoch) ([]Finding, error) {
	results, err := ep.PieeResults()
	if err != nil {
		return nil, err
	}
	recorded := map[string]*challenge.Verdict{}
	for _, se := range ep.Entries {
		if se.Entry.Kind == challenge.KindVerdict {
			if v, err := challenge.DecodeVerdict(se.Entry.Body); err == nil {
				recorded[v.Node] = v
			}
		}
	}
	out := make([]Finding, 0, len(ep.Draw))
	for _, ch := range ep.Draw {
		f := Finding{Epoch: ep.Epoch.Number, Node: ch.Node, Operator: ch.Operator, Class: ep.Epoch.Class(ch.Node),
			Recorded: recorded[ch.Node]}
		f.Recomputed = challenge.Tally(ep.Epoch.Number, ch, results[ch.Node], f.Class)
		f.Agrees = f.Recorded != nil && f.Recorded.Equal(&f.Recomputed)
		out = append(out, f)
	}
	return out, nil
}

// WaitVerdicts waits until every challenge of epoch n has a recorded
// verdict, or until deadline, and returns the audit of the epoch; an
// error if a verdict is still missing at the deadline.
func WaitVerdicts(ctx context.Context, lc *lclient.Client, n uint64, deadline time.Time) ([]Finding, error) {
	for {
		ep, err := lc.PieeEpoch(ctx, n, nil)
		if err != nil {
			return nil, err
		}
		fs, err := Audit(ep)
		if err != nil {
			return nil, err
		}
		missing := 0
		for _, f := range fs {
			if f.Recorded == nil {
				missing++
			}
		}
		if ep.Draw != nil && missing == 0 {
			return fs, nil
		}
		if time.Now().After(deadline) {
			return fs, fmt.Errorf("piee: epoch %d: %d of %d verdicts still missing at %s", n, missing, len(fs), deadline.UTC().Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
