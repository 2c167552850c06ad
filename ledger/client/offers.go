package client

import (
	"context"
	"encoding/json"
	"time"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// Offer is the body of an offer entry: what a provider node says it
// offers. Every field is the provider's own claim; a dispatcher matches
// on evidence it fetches and verifies, never on these alone.
type Offer struct {
	Classes        []string `json:"classes"`
	EvidenceDigest string   `json:"evidence_digest"` // sha256 of the evidence the node attests with, hex
	Measurements   []string `json:"measurements,omitempty"`
	Memory         uint64   `json:"memory"` // bytes
	Cores          uint64   `json:"cores"`
	Concurrency    uint64   `json:"concurrency"`     // concurrent runs
	Price          string   `json:"price,omitempty"` // per CPU-second, decimal
	Regions        []string `json:"regions,omitempty"`
	TTL            uint64   `json:"ttl"` // seconds from the block that takes it
}

// LiveOffer is a node's latest offer, live when the ledger answered.
type LiveOffer struct {
	Node         string    `json:"node"`
	Index        uint64    `json:"index"`
	Published    time.Time `json:"published"` // the offer entry's own time (the node's clock)
	Expires      time.Time `json:"expires"`
	Endpoint     string    `json:"endpoint,omitempty"`
	Organisation string    `json:"organisation,omitempty"`
	Offer        Offer     `json:"offer"`
}

// OfferList is the live offers at AsOf (the serving ledger node's clock).
type OfferList struct {
	AsOf   time.Time   `json:"as_of"`
	Height int64       `json:"height"`
	Offers []LiveOffer `json:"offers"`
}

// maxOffersJSON bounds GET /v1/offers: up to 10,000 offers of at most
// a few KiB each.
const maxOffersJSON = 64 << 20

// Offers fetches the live offers. Each listed entry is checked here — its
// signature, that it is an offer, that its submitter is the node it is
// listed for — so a ledger API cannot forge an offer; which offers are
// live, and the endpoints and organisations, are the server's reading of
// its state (its index lets a client prove each entry is in the log).
func (c *Client) Offers(ctx context.Context) (*OfferList, error) {
	b, err := c.do(ctx, "GET", "/v1/offers", nil, nil, maxOffersJSON, false)
	if err != nil {
		return nil, err
	}
	var raw struct {
		AsOf   time.Time `json:"as_of"`
		Height int64     `json:"height"`
		Offers []struct {
			Node         string          `json:"node"`
			Index        uint64          `json:"index"`
			Expires      time.Time       `json:"expires"`
			Endpoint     string          `json:"endpoint"`
			Organisation string          `json:"organisation"`
			Entry        json.RawMessage `json:"entry"`
		} `json:"offers"`
	}
	if err := decodeStrict(b, &raw); err != nil {
		return nil, malformed("offers: %v", err)
	}
	out := &OfferList{AsOf: raw.AsOf, Height: raw.Height, Offers: make([]LiveOffer, 0, len(raw.Offers))}
	for _, o := range raw.Offers {
		se, err := verify.DecodeEntry(o.Entry)
		if err != nil {
			return nil, malformed("offer %d: %v", o.Index, err)
		}
		if err := c.verifySig(o.Entry, se); err != nil {
			return nil, malformed("offer %d: %v", o.Index, err)
		}
		if se.Entry.Kind != "offer" || se.Entry.Submitter != o.Node {
			return nil, malformed("offer %d: a %s entry by %s, listed as an offer by %s", o.Index, se.Entry.Kind, se.Entry.Submitter, o.Node)
		}
		lo := LiveOffer{Node: o.Node, Index: o.Index, Published: se.Entry.ParsedTime(), Expires: o.Expires,
			Endpoint: o.Endpoint, Organisation: o.Organisation}
		if err := json.Unmarshal(se.Entry.Body, &lo.Offer); err != nil {
			return nil, malformed("offer %d: body: %v", o.Index, err)
		}
		out.Offers = append(out.Offers, lo)
	}
	return out, nil
}
