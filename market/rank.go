package market

import (
	"bytes"
	"crypto/sha256"
	"slices"
)

// RecordWindow is how many of a provider's latest runs its record counts.
const RecordWindow = 10

// Candidate is one provider that satisfied a request's requirement, with
// the inputs of its rank: all read from the ledger, so anyone can
// recompute the order.
type Candidate struct {
	Node  string  // "ed25519:…"
	Price float64 // per CPU-second, from its offer
	// Recent is the provider's latest runs, newest first, true for each
	// that failed (did not attest, died, missed its deadline). Only the
	// first RecordWindow count.
	Recent []bool
}

// Failures counts the failed runs among c's last RecordWindow.
func (c Candidate) Failures() int {
	n := 0
	for _, f := range c.Recent[:min(len(c.Recent), RecordWindow)] {
		if f {
			n++
		}
	}
	return n
}

// Rank orders candidates for the request with id requestID, best first:
// lower price, then fewer failures in the last RecordWindow runs, then a
// tie-break no party chooses: sha256(requestID ‖ 0x00 ‖ node), lower
// first. It is a pure function of its inputs and does not modify cs.
func Rank(requestID string, cs []Candidate) []Candidate {
	// Each candidate's keys are computed once, not in every comparison.
	type keyed struct {
		c        Candidate
		failures int
		tie      [32]byte
	}
	ks := make([]keyed, len(cs))
	for i, c := range cs {
		ks[i] = keyed{c: c, failures: c.Failures(), tie: sha256.Sum256([]byte(requestID + "\x00" + c.Node))}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int {
		switch {
		case a.c.Price < b.c.Price:
			return -1
		case a.c.Price > b.c.Price:
			return 1
		}
		if a.failures != b.failures {
			return a.failures - b.failures
		}
		return bytes.Compare(a.tie[:], b.tie[:])
	})
	out := make([]Candidate, len(ks))
	for i, k := range ks {
		out[i] = k.c
	}
	return out
}
