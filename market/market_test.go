package market

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/ledger/client"
)

func TestRequirementJudgesVerifiedClaims(t *testing.T) {
	r, err := Compile(`class in ['sev-snp', 'tdx'] && memory >= 2 * GiB && price <= 0.001 && !debug`)
	if err != nil {
		t.Fatal(err)
	}
	offer := &client.Offer{Classes: []string{"sev-snp"}, Memory: 4 << 30, Cores: 2, Concurrency: 1, Price: "0.0005"}
	for _, c := range []struct {
		name string
		o    client.Offer
		v    Verified
		want bool
	}{
		{"proven sev-snp", *offer, Verified{Class: "sev-snp"}, true},
		// The offer claims sev-snp; the evidence proves software: refused.
		{"lying offer", *offer, Verified{Class: "software"}, false},
		{"debug isolate", *offer, Verified{Class: "tdx", Debug: true}, false},
		{"too little memory", client.Offer{Memory: 1 << 30, Price: "0.0001"}, Verified{Class: "tdx"}, false},
		{"too dear", client.Offer{Memory: 4 << 30, Price: "0.002"}, Verified{Class: "tdx"}, false},
		{"no price is free", client.Offer{Memory: 4 << 30}, Verified{Class: "tdx"}, true},
	} {
		got, err := r.Satisfied(&c.o, c.v)
		if err != nil || got != c.want {
			t.Errorf("%s: %v %v, want %v", c.name, got, err, c.want)
		}
	}
	regions, err := Compile(`'eu-west' in regions && measurement == 'abcd'`)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := regions.Satisfied(&client.Offer{Regions: []string{"eu-west"}}, Verified{Measurement: "abcd"}); !ok || err != nil {
		t.Errorf("regions and measurement: %v %v", ok, err)
	}
	if ok, _ := regions.Satisfied(&client.Offer{}, Verified{Measurement: "abcd"}); ok {
		t.Error("an offer without regions matched a region")
	}
	if _, err := regions.Satisfied(&client.Offer{Price: "cheap"}, Verified{}); err == nil {
		t.Error("a malformed price was accepted")
	}
}

func TestCompileRefuses(t *testing.T) {
	for _, src := range []string{
		"", "memory", "class ==", "owner == 'x'", "memory >= '2GiB'", strings.Repeat("a", MaxRequirementLen+1),
	} {
		if _, err := Compile(src); err == nil {
			t.Errorf("Compile(%.40q) accepted", src)
		}
	}
}

func TestCostLimit(t *testing.T) {
	// An expression that would take quadratic work over a list is stopped.
	src := "regions.all(a, regions.all(b, regions.all(c, a + b + c != '')))"
	r, err := Compile(src)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]string, 200)
	for i := range big {
		big[i] = fmt.Sprint(i)
	}
	if _, err := r.Satisfied(&client.Offer{Regions: big}, Verified{}); err == nil || !strings.Contains(err.Error(), "cost") {
		t.Fatalf("an expensive requirement ran: %v", err)
	}
}

func TestRankPriceThenRecordThenTieBreak(t *testing.T) {
	healthy := Candidate{Node: "ed25519:healthy", Price: 0.001, Recent: []bool{false, false, false}}
	failing := Candidate{Node: "ed25519:failing", Price: 0.001, Recent: []bool{true, false, true, false, true}}
	cheapFailing := Candidate{Node: "ed25519:cheap", Price: 0.0005, Recent: []bool{true, true, true}}
	got := Rank("req-1", []Candidate{failing, healthy, cheapFailing})
	if got[0].Node != "ed25519:cheap" || got[1].Node != "ed25519:healthy" || got[2].Node != "ed25519:failing" {
		t.Fatalf("rank: %v", []string{got[0].Node, got[1].Node, got[2].Node})
	}
	// Only the last RecordWindow runs count: old failures are forgiven.
	old := Candidate{Node: "ed25519:old", Price: 0.001, Recent: append(make([]bool, RecordWindow), true, true, true)}
	if old.Failures() != 0 {
		t.Fatalf("failures beyond the window counted: %d", old.Failures())
	}
	// Equal price and record: the order depends on the request id only,
	// not on the input order, and differs between requests.
	a, b := Candidate{Node: "ed25519:a", Price: 1}, Candidate{Node: "ed25519:b", Price: 1}
	firsts := map[string]bool{}
	for i := range 32 {
		id := fmt.Sprint("req-", i)
		x, y := Rank(id, []Candidate{a, b}), Rank(id, []Candidate{b, a})
		if x[0].Node != y[0].Node {
			t.Fatalf("request %s: order depends on the input order", id)
		}
		firsts[x[0].Node] = true
	}
	if len(firsts) != 2 {
		t.Fatal("the tie-break always favours one node")
	}
	// Rank does not modify its input.
	in := []Candidate{failing, healthy}
	Rank("req-2", in)
	if in[0].Node != "ed25519:failing" {
		t.Fatal("Rank reordered its input")
	}
}
