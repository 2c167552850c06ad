package dispatch

import (
	"fmt"
	"strings"
	"testing"

	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/deal"
	"github.com/cloisterhq/cloister/market"
)

// Offers that cannot meet the requirement on their own fields are left
// out before the ranking is cut to MaxCandidates: twenty cheap offers of
// the wrong class or too little memory do not crowd out the one dearer
// provider that can serve the request.
func TestCandidatePoolFiltersBeforeTheCut(t *testing.T) {
	reqm, err := market.Compile("class == 'software' && memory >= 1 * GiB")
	if err != nil {
		t.Fatal(err)
	}
	var offers []lclient.LiveOffer
	for i := range 20 {
		o := lclient.LiveOffer{Node: fmt.Sprintf("ed25519:cheap-%02d", i), Endpoint: "https://127.0.0.1:1",
			Offer: lclient.Offer{Classes: []string{"software"}, Memory: 512 << 20, Price: "0.0005"}}
		if i%2 == 0 {
			o.Offer.Classes, o.Offer.Memory = []string{"sev-snp"}, 2<<30
		}
		offers = append(offers, o)
	}
	good := lclient.LiveOffer{Node: "ed25519:good", Endpoint: "https://127.0.0.1:2",
		Offer: lclient.Offer{Classes: []string{"sev-snp", "software"}, Memory: 2 << 30, Price: "0.001"}}
	dear := good
	dear.Node, dear.Offer.Price = "ed25519:dear", "0.5"
	failed := good
	failed.Node = "ed25519:failed"
	plain := good
	plain.Node, plain.Endpoint = "ed25519:plain", "http://127.0.0.1:3"
	offers = append(offers, good, dear, failed, plain)
	req := &deal.Request{ID: strings.Repeat("ab", 32), MaxPrice: "0.01"}
	pool := candidatePool(offers, req, reqm, []string{failed.Node})
	if len(pool) != 1 || pool[0].Node != good.Node {
		t.Fatalf("pool %+v, want only %s", pool, good.Node)
	}
	ranked := market.Rank(req.ID, rankInputs(pool, nil))
	if len(ranked) == 0 || ranked[0].Node != good.Node {
		t.Fatalf("ranked %+v", ranked)
	}
}
