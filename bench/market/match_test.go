// Package market holds benchmarks of the marketplace's decisions: the
// matching of a requirement against live offers and their ranking
// (package market), the dispatcher's decision with one candidate's
// evidence verified, and the whole marketplace on the loopback test
// network against a direct session (BenchmarkTestnet). Figures are in
// docs/marketplace.md. It contains no production code.
package market

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/software"
	"github.com/cloisterhq/cloister/bench/internal/measure"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/market"
)

const requirement = `class in ['software', 'sev-snp'] && memory >= 2 * GiB && price <= 0.002 && !debug`

// offers makes n offers of varied price, memory and class, and the claims
// a dispatcher would have verified of each (a quarter claim sev-snp and
// prove software).
func offers(n int) ([]client.LiveOffer, []market.Verified, map[string][]bool) {
	os := make([]client.LiveOffer, n)
	vs := make([]market.Verified, n)
	recs := map[string][]bool{}
	for i := range n {
		node := fmt.Sprintf("ed25519:node-%06d", i)
		class := "software"
		if i%4 == 0 {
			class = "sev-snp"
		}
		os[i] = client.LiveOffer{Node: node, Offer: client.Offer{Classes: []string{class}, Memory: uint64(1+i%4) << 30, Cores: 2,
			Concurrency: 4, Price: fmt.Sprintf("0.00%d", 1+i%3), Regions: []string{"eu-west"}}}
		vs[i] = market.Verified{Class: "software", Measurement: "ab"}
		recs[node] = []bool{i%7 == 0, false, i%5 == 0}
	}
	return os, vs, recs
}

// match is the pure part of a dispatch decision: the requirement judged
// on every offer with its verified claims, then the ranking.
func match(b *testing.B, r *market.Requirement, os []client.LiveOffer, vs []market.Verified, recs map[string][]bool) []market.Candidate {
	cs := make([]market.Candidate, 0, len(os))
	for i := range os {
		ok, err := r.Satisfied(&os[i].Offer, vs[i])
		if err != nil {
			b.Fatal(err)
		}
		if ok {
			p, _ := market.Price(&os[i].Offer)
			cs = append(cs, market.Candidate{Node: os[i].Node, Price: p, Recent: recs[os[i].Node]})
		}
	}
	return market.Rank("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", cs)
}

// BenchmarkMatch: matching and ranking N offers (goal: ≤ 50 ms at
// 10,000, linear or better).
func BenchmarkMatch(b *testing.B) {
	r, err := market.Compile(requirement)
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{100, 1000, 10000} {
		os, vs, recs := offers(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			cpu0 := measure.SelfCPU()
			for b.Loop() {
				if len(match(b, r, os, vs, recs)) == 0 {
					b.Fatal("nothing matched")
				}
			}
			cpu := measure.SelfCPU() - cpu0
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/offer")
		})
	}
}

// BenchmarkDecision100: the dispatcher's decision with 100 live offers:
// match and rank them, then verify the best candidate's fresh software
// evidence (goal: ≤ 20 ms p50). It leaves out the network: opening the
// session on the node and the ledger's commit of the assignment.
func BenchmarkDecision100(b *testing.B) {
	r, err := market.Compile(requirement)
	if err != nil {
		b.Fatal(err)
	}
	os, vs, recs := offers(100)
	a, err := software.NewAttester(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32)), software.WithMeasurement(sha256.Sum256([]byte("bench"))))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var rd [attest.ReportDataSize]byte
	opts := attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{a.PublicKey()}}
	var lat []time.Duration
	cpu0 := measure.SelfCPU()
	for b.Loop() {
		t0 := time.Now()
		ranked := match(b, r, os, vs, recs)
		rd[0]++
		ev, err := a.Attest(ctx, rd)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := attest.Verify(ctx, ev, opts); err != nil || len(ranked) == 0 {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.ReportMetric(float64((measure.SelfCPU()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	if len(lat) > 0 {
		b.ReportMetric(float64(p50(lat).Microseconds())/1000, "p50-ms")
	}
}

func p50(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2]
}
