package ledger

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/ledger/verify"
)

func offerBody(ttl int) map[string]any {
	return map[string]any{
		"classes": []string{"software"}, "evidence_digest": strings.Repeat("ee", 32),
		"measurements": []string{strings.Repeat("ab", 32)}, "memory": 2 << 30, "cores": 2,
		"concurrency": 4, "price": "0.001", "regions": []string{"eu-west"}, "ttl": ttl,
	}
}

func (c *aclChain) offers() OfferList {
	c.t.Helper()
	st, _ := c.a.state()
	var out OfferList
	if err := c.a.store.view(func(r reader) error { out = liveOffers(r, st, c.at(c.height)); return nil }); err != nil {
		c.t.Fatal(err)
	}
	return out
}

// Nodes register with an endpoint and organisation, move, and publish
// offers that live until their expiry unless renewed; all judged by the
// state machine at block time.
func TestOffersThroughTheStateMachine(t *testing.T) {
	t.Parallel()
	c := newACLChain(t, RulesV4)
	val, org, node, stranger := seedKey(0x51), seedKey(0x71), seedKey(0x72), seedKey(0x73)
	nodeBodyWith := func(k ed25519.PrivateKey, extra map[string]any) map[string]any {
		b := nodeBody(k.Public().(ed25519.PublicKey))
		for n, v := range extra {
			b[n] = v
		}
		return b
	}
	// The organisation must be a member; the endpoint a plain URL.
	c.want([][]byte{
		c.entry(node, KindNodeRegistered, nodeBodyWith(node, map[string]any{"organisation": pubText(org)})),
		c.entry(node, KindNodeRegistered, nodeBodyWith(node, map[string]any{"endpoint": "ftp://x"})),
		c.entry(node, KindNodeRegistered, nodeBodyWith(node, map[string]any{"endpoint": "https://u:p@x/"})),
		c.entry(node, KindNodeRegistered, nodeBodyWith(node, map[string]any{"colour": "red"})),
	}, "missing_reference: not a consortium member", "malformed: endpoint", "malformed: endpoint", "malformed: unknown field")
	c.want([][]byte{c.entry(val, KindMemberAdmitted, map[string]any{"member": pubText(org), "name": "org-a"})}, "ok")
	c.want([][]byte{c.entry(node, KindNodeRegistered, nodeBodyWith(node, map[string]any{
		"organisation": pubText(org), "endpoint": "https://127.0.0.1:7001"}))}, "ok")

	// Offers: only from registered nodes, well-formed, bounded ttl.
	bad := func(field string, v any) []byte {
		b := offerBody(60)
		if v == nil {
			delete(b, field)
		} else {
			b[field] = v
		}
		return c.entry(node, KindOffer, b)
	}
	c.want([][]byte{
		c.entry(stranger, KindOffer, offerBody(60)),
		bad("ttl", 601), bad("ttl", 0), bad("price", "-1"), bad("price", "1e3"),
		bad("classes", []string{}), bad("classes", []string{"SEV"}), bad("cores", 0), bad("memory", nil),
		bad("evidence_digest", "abc"), bad("measurements", []string{"zz"}), bad("regions", []string{"a", "a"}),
	}, "unauthorized: registered nodes", "malformed: ttl", "malformed: ttl", "malformed: price", "malformed: price",
		"malformed: classes", "malformed: classes", "malformed: cores", "malformed: memory",
		"malformed: evidence_digest", "malformed: measurements", "malformed: appears twice")
	if n := len(c.offers().Offers); n != 0 {
		t.Fatalf("%d live offers after refusals", n)
	}
	first := c.one(c.entry(node, KindOffer, offerBody(3)), "ok")
	l := c.offers()
	if len(l.Offers) != 1 || l.Offers[0].Index != first || l.Offers[0].Endpoint != "https://127.0.0.1:7001" ||
		l.Offers[0].Organisation != pubText(org) || l.Offers[0].Node != pubText(node) {
		t.Fatalf("live offers: %+v", l)
	}
	if _, err := verify.DecodeEntry(l.Offers[0].Entry); err != nil {
		t.Fatalf("listed entry: %v", err)
	}
	// Expiry: three blocks (seconds) on it is gone; a renewal brings it back.
	c.block()
	c.block()
	if n := len(c.offers().Offers); n != 1 {
		t.Fatalf("%d live offers before expiry", n)
	}
	c.block()
	if n := len(c.offers().Offers); n != 0 {
		t.Fatalf("%d live offers past expiry", n)
	}
	renewed := c.one(c.entry(node, KindOffer, offerBody(60)), "ok")
	if l := c.offers(); len(l.Offers) != 1 || l.Offers[0].Index != renewed {
		t.Fatalf("after renewal: %+v", l)
	}
	// The endpoint moves; the organisation stays; strangers cannot.
	c.want([][]byte{
		c.entry(stranger, KindNodeEndpoint, map[string]any{"endpoint": "https://evil"}),
		c.entry(node, KindNodeEndpoint, map[string]any{}),
		c.entry(node, KindNodeEndpoint, map[string]any{"endpoint": "https://127.0.0.1:7002"}),
	}, "unauthorized: registered nodes", "malformed: missing", "ok")
	if l := c.offers(); l.Offers[0].Endpoint != "https://127.0.0.1:7002" || l.Offers[0].Organisation != pubText(org) {
		t.Fatalf("after the move: %+v", l.Offers[0])
	}
}

// Before version 4 the new kinds and fields do not exist.
func TestOffersBeforeV4(t *testing.T) {
	t.Parallel()
	c := newACLChain(t, RulesV3)
	node := seedKey(0x72)
	b := nodeBody(node.Public().(ed25519.PublicKey))
	b["endpoint"] = "https://127.0.0.1:7001"
	c.want([][]byte{c.entry(node, KindNodeRegistered, b)}, "malformed: unknown field")
	c.want([][]byte{c.entry(node, KindNodeRegistered, nodeBody(node.Public().(ed25519.PublicKey)))}, "ok")
	c.want([][]byte{c.entry(node, KindOffer, offerBody(60)), c.entry(node, KindNodeEndpoint, map[string]any{"endpoint": "https://x"})},
		"malformed: not one of the ledger's kinds", "malformed: not one of the ledger's kinds")
}
