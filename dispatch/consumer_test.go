package dispatch

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/acl"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/deal"
	"github.com/cloisterhq/cloister/market"
	"github.com/cloisterhq/cloister/policy"
)

// A dispatcher that writes a policy other than the request's is refused by
// the consumer before anything is sent: itself as a reader, another
// program, a class outside the requirement, debug, a later expiry, a
// node the ranking did not put first.
func TestConsumerRefusesALyingDispatcher(t *testing.T) {
	consumer, _ := keys.Generate()
	other, _ := keys.Generate()
	nodeA, _ := keys.Generate()
	nodeB, _ := keys.Generate()
	req := &deal.Request{ID: strings.Repeat("ab", 32), ProgramSHA256: strings.Repeat("01", 32), Sealed: "sha256:" + strings.Repeat("02", 32),
		Requirement: "class == 'software' && memory >= 1 * GiB", Inputs: []string{"text"},
		Deadline: acl.FormatTime(time.Now().Add(time.Hour)), SealingKey: consumer.Public().SealingString()}
	reqm, err := market.Compile(req.Requirement)
	if err != nil {
		t.Fatal(err)
	}
	lst := Listing{Name: "wordcount.wasm", SHA256: req.ProgramSHA256, Outputs: []string{"count.json"},
		Sealed: policy.SealedProgram{Digest: req.Sealed, Owner: other.Public().SigningString(), Stores: []string{"http://127.0.0.1:1/programs"},
			Brokers: []policy.SealedBroker{{URL: "http://127.0.0.1:2", Key: other.Public().SigningString()}}, Threshold: 1}}
	offer := lclient.LiveOffer{Node: nodeA.Public().SigningString(), Offer: lclient.Offer{Classes: []string{"software", "sev-snp"}, Memory: 2 << 30, Price: "0.001"}}
	rd := time.Now().Add(30 * time.Minute)
	doc, err := WritePolicy(req, reqm, consumer.Public().SigningString(), lst, offer, rd)
	if err != nil {
		t.Fatal(err)
	}
	cands := []market.Candidate{{Node: nodeA.Public().SigningString(), Price: 0.001}, {Node: nodeB.Public().SigningString(), Price: 0.001}}
	first := market.Rank(req.ID, cands)[0].Node
	assignment := func(doc []byte, node string) *deal.Assignment {
		p, err := policy.Parse(doc)
		if err != nil {
			t.Fatal(err)
		}
		return &deal.Assignment{Request: req.ID, Token: 1, Node: node, PolicyHash: p.HashHex(), Policy: doc,
			Candidates: []deal.Candidate{{Node: nodeA.Public().SigningString(), Price: "0.001"}, {Node: nodeB.Public().SigningString(), Price: "0.001"}}}
	}
	pol, err := CheckPolicy(assignment(doc, first), req, consumer.Public(), reqm, &offer.Offer)
	if err != nil {
		t.Fatalf("the honest policy: %v", err)
	}
	if len(pol.Isolates) != 1 || pol.Isolates[0].Class != "software" {
		t.Fatalf("the written policy admits %+v; only software satisfies the requirement", pol.Isolates)
	}
	second := nodeA.Public().SigningString()
	if second == first {
		second = nodeB.Public().SigningString()
	}
	tamper := func(f func(p *policy.Policy)) []byte {
		var p policy.Policy
		if err := json.Unmarshal(doc, &p); err != nil {
			t.Fatal(err)
		}
		f(&p)
		b, _ := json.Marshal(&p)
		return b
	}
	for _, c := range []struct {
		name string
		a    *deal.Assignment
		want string
	}{
		{"dispatcher as a reader", assignment(tamper(func(p *policy.Policy) {
			p.Principals = append(p.Principals, policy.Principal{ID: "d", SigningKey: other.Public().SigningString(), SealingKey: other.Public().SealingString(), Roles: []policy.Role{policy.RoleResultReader}})
			p.Outputs[0].Readers = append(p.Outputs[0].Readers, "d")
		}), first), "principals"},
		{"another program", assignment(tamper(func(p *policy.Policy) { p.Programs[0].SHA256 = strings.Repeat("03", 32) }), first), "not the requested"},
		{"a class outside the requirement", assignment(tamper(func(p *policy.Policy) {
			p.Isolates = append(p.Isolates, policy.Isolate{Class: "sev-snp", Measurements: []string{strings.Repeat("ab", 48)}})
		}), first), "outside the requirement"},
		{"debug", assignment(tamper(func(p *policy.Policy) { p.Isolates[0].AllowDebug = true }), first), "debug"},
		{"later expiry", assignment(tamper(func(p *policy.Policy) { p.Expires = time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second) }), first), "expires"},
		{"not first in the rank", assignment(doc, second), "not the first"},
	} {
		if _, err := CheckPolicy(c.a, req, consumer.Public(), reqm, &offer.Offer); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %q", c.name, err, c.want)
		}
	}
	// A provider that keeps failing is ranked down at equal price, and
	// the consumer holds the dispatcher to that.
	failing := assignment(doc, first)
	for i := range failing.Candidates {
		if failing.Candidates[i].Node == first {
			failing.Candidates[i].Failures = 3
		}
	}
	if _, err := CheckPolicy(failing, req, consumer.Public(), reqm, &offer.Offer); err == nil || !strings.Contains(err.Error(), "not the first") {
		t.Errorf("a node with 3 recent failures chosen over a healthy one at equal price: %v", err)
	}
}
