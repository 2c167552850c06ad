package dispatch

import (
	"context"
	"fmt"
	"slices"

	"github.com/cloisterhq/cloister/ledger/deal"
	"github.com/cloisterhq/cloister/market"
)

// Ranking by proof of isolated execution (docs/piee.md "Scores",
// docs/marketplace.md). The market's order (price, recent run failures,
// a tie-break nobody chooses) is what the ledger and the consumer
// recompute from the assignment's own inputs. The dispatcher tries
// candidates in a PIEE-first order instead: fewer PIEE faults first — the
// challenges a node failed as the challenged node plus those it
// disagreed with the majority on as a verifier, both from the ledger's
// scores — then the market's order. A candidate it chooses is still the
// first of the market's ranking once the candidates it passed over are
// listed as skipped, each with the reason: a better-ranked candidate with
// more PIEE faults is skipped for them, so the consumer's check holds and
// the reason is on the ledger.

// pieeFaults reads each scored node's PIEE faults from the ledger. A
// ledger that cannot say leaves the ranking to the market alone.
func (d *Dispatcher) pieeFaults(ctx context.Context) map[string]uint64 {
	sc, err := d.o.Ledger.PieeScores(ctx)
	if err != nil {
		d.log.Warn("reading PIEE scores; ranking by the market alone", "err", err)
		return nil
	}
	out := make(map[string]uint64, len(sc.Scores))
	for _, s := range sc.Scores {
		if n := s.Failed + s.Disagreed; n > 0 {
			out[s.Node] = n
		}
	}
	return out
}

// pieeOrder is the order the dispatcher tries ranked candidates in:
// fewer PIEE faults first, the market's order among equals.
func pieeOrder(ranked []market.Candidate, faults map[string]uint64) []market.Candidate {
	out := slices.Clone(ranked)
	slices.SortStableFunc(out, func(a, b market.Candidate) int {
		fa, fb := faults[a.Node], faults[b.Node]
		switch {
		case fa < fb:
			return -1
		case fa > fb:
			return 1
		}
		return 0
	})
	return out
}

// pieeSkips lists the candidates the market ranks before chosen that
// were not tried (not in skipped): in pieeOrder they come after it, so
// each has more PIEE faults, which is its reason.
func pieeSkips(ranked []market.Candidate, chosen string, faults map[string]uint64, skipped []deal.Skipped) []deal.Skipped {
	var out []deal.Skipped
	for _, c := range ranked {
		if c.Node == chosen {
			break
		}
		if slices.ContainsFunc(skipped, func(s deal.Skipped) bool { return s.Node == c.Node }) {
			continue
		}
		out = append(out, deal.Skipped{Node: c.Node, Reason: fmt.Sprintf("ranked below %s by proof of isolated execution: %d failed or outvoted challenges on the ledger, against %d", chosen, faults[c.Node], faults[chosen])})
	}
	return out
}
