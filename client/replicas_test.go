package client

import (
	"crypto/ed25519"
	"testing"

	"github.com/cloisterhq/cloister/api/protocol"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/policy"
)

// Replicas are chosen among the live offers a policy accepts, one per
// organisation (and per class when the policy asks), the node asked
// first.
func TestChooseReplicas(t *testing.T) {
	t.Parallel()
	var ks []string
	for i := range 6 {
		seed := make([]byte, ed25519.SeedSize)
		seed[0] = byte(i + 1)
		ks = append(ks, protocol.FormatEd25519Key(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)))
	}
	offer := func(node int, org, class string) lclient.LiveOffer {
		return lclient.LiveOffer{Node: ks[node], Organisation: org, Endpoint: "https://127.0.0.1:1", Offer: lclient.Offer{Classes: []string{class}}}
	}
	offers := &lclient.OfferList{Offers: []lclient.LiveOffer{
		offer(0, "orgA", "software"), offer(1, "orgA", "software"), offer(2, "orgB", "software"),
		offer(3, "orgC", "tpm"), offer(4, "", "software"), offer(5, "orgD", "software"),
	}}
	pol := &policy.Policy{Isolates: []policy.Isolate{
		{Class: "software", PlatformKeys: []string{ks[0], ks[1], ks[2], ks[4]}}, // not ks[5]
		{Class: "tpm"},
	}}
	cands := candidates(offers, pol)
	var got []string
	for _, c := range cands {
		got = append(got, c.node+"/"+c.org)
	}
	// ks[4] has no organisation, ks[5] is not listed.
	if len(cands) != 4 {
		t.Fatalf("candidates %v, want nodes 0–3", got)
	}
	first := -1
	for i, c := range cands {
		if c.node == ks[1] {
			first = i
		}
	}
	three := choose(cands, first, 3, false)
	orgs := map[string]bool{}
	for _, c := range three {
		orgs[c.org] = true
	}
	if len(three) != 3 || three[0].node != ks[1] || len(orgs) != 3 {
		t.Fatalf("chose %+v, want node 1 then one each of orgB and orgC", three)
	}
	if four := choose(cands, first, 4, false); len(four) != 3 {
		t.Fatalf("four replicas out of three organisations: %+v", four)
	}
	// Distinct classes: only one software and one tpm.
	if two := choose(cands, first, 3, true); len(two) != 2 || two[1].class != "tpm" {
		t.Fatalf("distinct classes: %+v", two)
	}
}
