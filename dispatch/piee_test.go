package dispatch

import (
	"slices"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/ledger/deal"
	"github.com/cloisterhq/cloister/market"
)

// TestPieeRanking: a node with failed challenges is tried after an
// honest one even when the market ranks it first (cheaper), and the
// assignment the dispatcher writes still passes the consumer's check:
// its choice is first of the market's ranking once the skipped are left
// out, and the skip names the PIEE faults.
func TestPieeRanking(t *testing.T) {
	cands := []market.Candidate{
		{Node: "ed25519:cheap-but-failed", Price: 1},
		{Node: "ed25519:honest", Price: 2},
		{Node: "ed25519:outvoted", Price: 1.5},
		{Node: "ed25519:honest-dear", Price: 3},
	}
	ranked := market.Rank("req-1", cands)
	faults := map[string]uint64{"ed25519:cheap-but-failed": 2, "ed25519:outvoted": 1}
	var order []string
	for _, c := range pieeOrder(ranked, faults) {
		order = append(order, c.Node)
	}
	want := []string{"ed25519:honest", "ed25519:honest-dear", "ed25519:outvoted", "ed25519:cheap-but-failed"}
	if !slices.Equal(order, want) {
		t.Fatalf("tried in order %v, want %v", order, want)
	}
	consumerCheck := func(chosen string, skipped []deal.Skipped) {
		t.Helper()
		var rest []market.Candidate
		for _, c := range ranked {
			if !slices.ContainsFunc(skipped, func(s deal.Skipped) bool { return s.Node == c.Node }) {
				rest = append(rest, c)
			}
		}
		if r := market.Rank("req-1", rest); len(r) == 0 || r[0].Node != chosen {
			t.Fatalf("consumer's check: %s is not first of %v", chosen, r)
		}
	}
	// The honest node answers first: both cheaper nodes with faults are
	// skipped for them.
	sk := pieeSkips(ranked, "ed25519:honest", faults, nil)
	if len(sk) != 2 || !strings.Contains(sk[0].Reason+sk[1].Reason, "2 failed or outvoted challenges") {
		t.Fatalf("skips %+v", sk)
	}
	consumerCheck("ed25519:honest", sk)
	// Both honest nodes down (skipped by the probe): the one outvoted once
	// is chosen over the one that failed twice.
	probed := []deal.Skipped{{Node: "ed25519:honest", Reason: "unreachable"}, {Node: "ed25519:honest-dear", Reason: "unreachable"}}
	sk = append(probed, pieeSkips(ranked, "ed25519:outvoted", faults, probed)...)
	consumerCheck("ed25519:outvoted", sk)
	// No scores: the market's order alone.
	if got := pieeOrder(ranked, nil); !slices.EqualFunc(got, ranked, func(a, b market.Candidate) bool { return a.Node == b.Node }) {
		t.Fatalf("without scores: %v, want %v", got, ranked)
	}
}
