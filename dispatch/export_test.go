package dispatch

import (
	"time"

	"github.com/cloisterhq/cloister/ledger/acl"
)

// VouchForAll makes d a lying dispatcher for tests: it assigns the best
// ranked candidate whether or not its verified claims satisfy the
// requirement, as a dispatcher in a provider's pay would.
func VouchForAll(d *Dispatcher) { d.vouchAll = true }

// NewForRate is a dispatcher with only what its rate guard needs.
func NewForRate() *Dispatcher {
	return &Dispatcher{granted: map[uint64][]int64{}, counted: map[uint64]bool{}}
}

// RateAllows and NoteGrant expose the dispatcher's guard of its
// delegation's rate, by the grants it counted (no ledger to read back).
func (d *Dispatcher) RateAllows(deleg uint64, r *acl.Rate, now time.Time) error {
	return d.rateCheck(deleg, r, now)
}
func (d *Dispatcher) NoteGrant(deleg uint64, now time.Time) { d.noteGrant(deleg, now) }
