package dispatch

import (
	"context"
	"fmt"
	"time"

	"github.com/cloisterhq/cloister/ledger/acl"
)

// The dispatcher guards its delegation's rate itself (a grant the ledger
// refuses for the rate would fail an assignment, and count against a
// provider that did nothing wrong). It counts the grants it makes; the
// ones made before it started — by an earlier run of this dispatcher, or
// another process holding its key — it reads back from the ledger the
// first time it judges the delegation, so a restart does not reset the
// count (decision 0163).

// entryTimeSlack bounds how far an entry's own time may lie from its
// block's time (the ledger's maxClockSkew, 10 minutes, either way): the
// entries of a window of block time are looked for from this much
// before it, in log order.
const entryTimeSlack = 20 * time.Minute

// blockLag is added to a grant's own time to stand for its block's time
// (a grant is signed just before it is appended and committed), so that
// the guard errs on the side of the ledger's refusal.
const blockLag = 5 * time.Second

// maxRateScan bounds the entries read to rebuild one delegation's count;
// beyond it the count is what was found, and the ledger stays the guard.
const maxRateScan = 500_000

// rateAllows judges one more grant under delegation deleg at now against
// its rate r, by this dispatcher's grants within the window — read back
// from the ledger the first time (ownGrants), then counted as it makes
// them.
func (d *Dispatcher) rateAllows(ctx context.Context, deleg uint64, r *acl.Rate, now time.Time) error {
	if r == nil {
		return nil
	}
	d.mu.Lock()
	counted := d.counted[deleg]
	d.mu.Unlock()
	if !counted {
		ts, err := d.ownGrants(ctx, deleg, now.Add(-time.Duration(r.WindowSeconds)*time.Second))
		if err != nil {
			return fmt.Errorf("reading back this dispatcher's grants under delegation %d: %w", deleg, err)
		}
		d.mu.Lock()
		if !d.counted[deleg] {
			d.counted[deleg] = true
			// A grant this process made meanwhile may be in ts too:
			// counted twice, it errs on the side of the ledger.
			d.granted[deleg] = append(ts, d.granted[deleg]...)
		}
		d.mu.Unlock()
		if len(ts) > 0 {
			d.log.Info("rate count read back from the ledger", "delegation", deleg, "grants", len(ts), "window", time.Duration(r.WindowSeconds)*time.Second)
		}
	}
	return d.rateCheck(deleg, r, now)
}

// rateCheck judges one more grant under delegation deleg at now by the
// grants counted so far.
func (d *Dispatcher) rateCheck(deleg uint64, r *acl.Rate, now time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	keep, err := r.Allows(d.granted[deleg], now)
	d.granted[deleg] = keep
	return err
}

// noteGrant remembers a grant made under delegation deleg at now.
func (d *Dispatcher) noteGrant(deleg uint64, now time.Time) {
	d.mu.Lock()
	d.granted[deleg] = append(d.granted[deleg], now.Unix())
	d.mu.Unlock()
}

// ownGrants reads from the ledger the times (Unix seconds, each its
// entry's own time plus blockLag) of the acl.granted entries this
// dispatcher's key signed under delegation deleg since since. Entries are
// in block order and each entry's time is within the ledger's clock skew
// of its block's, so it finds by bisection the first entry after the
// delegation whose own time is within entryTimeSlack of since, and reads
// on from there to the end of the log.
func (d *Dispatcher) ownGrants(ctx context.Context, deleg uint64, since time.Time) ([]int64, error) {
	st, err := d.o.Ledger.Status(ctx)
	if err != nil {
		return nil, err
	}
	from := since.Add(-entryTimeSlack)
	lo, hi := deleg+1, st.Size
	for lo < hi {
		mid := lo + (hi-lo)/2
		e, err := d.o.Ledger.Get(ctx, mid)
		if err != nil {
			return nil, err
		}
		if e.Signed.Entry.ParsedTime().Before(from) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	var out []int64
	for i, read := lo, uint64(0); i < st.Size && read < maxRateScan; {
		page, err := d.o.Ledger.Entries(ctx, i, 1000)
		if err != nil {
			return nil, err
		}
		if len(page.Entries) == 0 {
			break
		}
		for _, e := range page.Entries {
			se := e.Signed
			if se.Entry.Kind != acl.KindGranted || se.Entry.Submitter != d.pub {
				continue
			}
			g, err := acl.DecodeGrant(se.Entry.Body)
			if err != nil || g.Delegation == nil || *g.Delegation != deleg {
				continue
			}
			if t := se.Entry.ParsedTime().Add(blockLag); t.After(since) {
				out = append(out, t.Unix())
			}
		}
		read += uint64(len(page.Entries))
		i = page.Entries[len(page.Entries)-1].Index + 1
		if read >= maxRateScan {
			d.log.Warn("rate count: stopped reading back grants", "delegation", deleg, "entries", read)
		}
	}
	return out, nil
}
