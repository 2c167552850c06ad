package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Rule version 4 makes nodes findable and lets them offer capacity
// (decision 0110):
//
//   - node.registered may name the node's endpoint (the URL consumers and
//     dispatchers reach it at) and its organisation (the key of a current
//     consortium member);
//   - node.endpoint moves a registered node to a new endpoint;
//   - offer publishes what a registered node offers — isolate classes,
//     the digest of the evidence and the measurements it attests to,
//     memory, cores, concurrent runs, an optional price per CPU-second and
//     region labels — for ttl seconds from the block that takes it. A node
//     renews (heartbeat) by sending a new offer, which replaces the old;
//     an offer whose expiry is past the latest block time is not live.
//
// Everything in an offer is the provider's own claim. The dispatcher
// matches on evidence it fetches and verifies itself, never on these
// fields alone.

// Limits of an offer and of a node's endpoint.
const (
	maxEndpointLen  = 256
	maxOfferClasses = 8
	maxOfferMeas    = 16
	maxOfferRegions = 8
	maxOfferTTL     = 600 // seconds; a node renews well before
	maxPriceLen     = 24
)

// Offer buckets:
//
//	node_info  platform key (32) -> endpoint length (2) || endpoint || organisation key (0 or 32)
//	offers     platform key (32) -> index of the latest offer (8) || expiry, unix seconds (8)
var (
	bucketNodeInfo = []byte("node_info")
	bucketOffers   = []byte("offers")
)

func ruleNodeRegisteredV4(c *ruleCtx) ([]write, *verify.RejectedError) {
	b := c.body
	if rej := b.only("platform_key", "class", "evidence", "measurement", "endpoint", "organisation"); rej != nil {
		return nil, rej
	}
	ep, org := b.fields["endpoint"], b.fields["organisation"]
	delete(b.fields, "endpoint")
	delete(b.fields, "organisation")
	ws, rej := ruleNodeRegistered(c)
	b.fields["endpoint"], b.fields["organisation"] = ep, org
	if ep == nil {
		delete(b.fields, "endpoint")
	}
	if org == nil {
		delete(b.fields, "organisation")
	}
	if rej != nil {
		return nil, rej
	}
	endpoint, rej := c.endpoint(false)
	if rej != nil {
		return nil, rej
	}
	var orgKey []byte
	if s, rej := b.str("organisation", false, 128); rej != nil {
		return nil, rej
	} else if s != "" {
		pk, err := protocol.ParseEd25519Key(s)
		if err != nil {
			return nil, reject(verify.CodeMalformed, "node.registered body organisation: %v", err)
		}
		if !isCurrentMember(c.v, pk) {
			return nil, reject(verify.CodeMissingReference, "node.registered: organisation %s is not a consortium member", s)
		}
		orgKey = pk
	}
	return append(ws, write{bucketNodeInfo, bytes.Clone(c.pub), nodeInfoValue(endpoint, orgKey)}), nil
}

func ruleNodeEndpoint(c *ruleCtx) ([]write, *verify.RejectedError) {
	if rej := c.body.only("endpoint"); rej != nil {
		return nil, rej
	}
	if rej := c.requireNode(); rej != nil {
		return nil, rej
	}
	endpoint, rej := c.endpoint(true)
	if rej != nil {
		return nil, rej
	}
	_, org := parseNodeInfo(c.v.get(bucketNodeInfo, c.pub))
	return []write{{bucketNodeInfo, bytes.Clone(c.pub), nodeInfoValue(endpoint, org)}}, nil
}

func ruleOffer(c *ruleCtx) ([]write, *verify.RejectedError) {
	b := c.body
	if rej := b.only("classes", "evidence_digest", "measurements", "memory", "cores", "concurrency", "price", "regions", "ttl"); rej != nil {
		return nil, rej
	}
	if rej := c.requireNode(); rej != nil {
		return nil, rej
	}
	if _, rej := b.tokens("classes", true, maxOfferClasses); rej != nil {
		return nil, rej
	}
	if _, rej := b.hash("evidence_digest", true); rej != nil {
		return nil, rej
	}
	meas, rej := b.strs("measurements", false, maxOfferMeas, 256)
	if rej != nil {
		return nil, rej
	}
	for _, m := range meas {
		if !isLowerHex(m, 0) {
			return nil, reject(verify.CodeMalformed, "offer body measurements: want lower-case hex")
		}
	}
	if _, rej := b.tokens("regions", false, maxOfferRegions); rej != nil {
		return nil, rej
	}
	for _, name := range []string{"memory", "cores", "concurrency"} {
		n, rej := b.uint(name)
		if rej != nil {
			return nil, rej
		}
		if n == 0 {
			return nil, reject(verify.CodeMalformed, "offer body %s: must be at least 1", name)
		}
	}
	if p, rej := b.str("price", false, maxPriceLen); rej != nil {
		return nil, rej
	} else if p != "" && !isDecimal(p) {
		return nil, reject(verify.CodeMalformed, "offer body price %q: want a decimal number such as \"0.001\" (per CPU-second)", p)
	}
	ttl, rej := b.uint("ttl")
	if rej != nil {
		return nil, rej
	}
	if ttl == 0 || ttl > maxOfferTTL {
		return nil, reject(verify.CodeMalformed, "offer body ttl: want 1 to %d seconds (renew the offer before it expires)", maxOfferTTL)
	}
	exp := uint64(c.now.Unix()) + ttl
	return []write{{bucketOffers, bytes.Clone(c.pub), append(be64(c.index), be64(exp)...)}}, nil
}

// endpoint reads and checks the body's endpoint: an absolute http or
// https URL with a host and nothing after the path.
func (c *ruleCtx) endpoint(required bool) (string, *verify.RejectedError) {
	s, rej := c.body.str("endpoint", required, maxEndpointLen)
	if rej != nil || s == "" {
		return s, rej
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" || strings.ContainsFunc(s, unicode.IsSpace) {
		return "", reject(verify.CodeMalformed, "%s body endpoint %.80q: want an http(s) URL with a host, no user, query or fragment", c.body.kind, s)
	}
	return s, nil
}

// strs returns a string-array member of at most maxN non-empty strings of
// at most maxLen bytes, without repeats.
func (b *body) strs(name string, required bool, maxN, maxLen int) ([]string, *verify.RejectedError) {
	raw, ok := b.fields[name]
	if !ok {
		if required {
			return nil, reject(verify.CodeMalformed, "%s body: missing %q", b.kind, name)
		}
		return nil, nil
	}
	var ss []string
	if err := json.Unmarshal(raw, &ss); err != nil || ss == nil {
		return nil, reject(verify.CodeMalformed, "%s body %s: want an array of strings", b.kind, name)
	}
	if len(ss) > maxN || (required && len(ss) == 0) {
		return nil, reject(verify.CodeMalformed, "%s body %s: want 1 to %d entries", b.kind, name, maxN)
	}
	seen := make(map[string]bool, len(ss))
	for _, s := range ss {
		if s == "" || len(s) > maxLen {
			return nil, reject(verify.CodeMalformed, "%s body %s: each entry 1 to %d bytes", b.kind, name, maxLen)
		}
		if seen[s] {
			return nil, reject(verify.CodeMalformed, "%s body %s: %.40q appears twice", b.kind, name, s)
		}
		seen[s] = true
	}
	return ss, nil
}

// tokens is strs whose entries are tokens (lower-case letters, digits, '-').
func (b *body) tokens(name string, required bool, maxN int) ([]string, *verify.RejectedError) {
	ss, rej := b.strs(name, required, maxN, 32)
	if rej != nil {
		return nil, rej
	}
	for _, s := range ss {
		if !isToken(s) {
			return nil, reject(verify.CodeMalformed, "%s body %s %q: want lower-case letters, digits and '-'", b.kind, name, s)
		}
	}
	return ss, nil
}

// isDecimal reports whether s is digits with at most one '.' between
// digits: a non-negative decimal without exponent or sign.
func isDecimal(s string) bool {
	whole, frac, hasDot := strings.Cut(s, ".")
	digits := func(t string) bool {
		return t != "" && strings.Trim(t, "0123456789") == ""
	}
	return digits(whole) && (!hasDot || digits(frac))
}

func isCurrentMember(v blockView, pk ed25519.PublicKey) bool {
	cur := v.get(bucketMembers, pk)
	if len(cur) < 16 {
		return false
	}
	removed, _ := getU64(cur[8:16])
	return removed == 0
}

func nodeInfoValue(endpoint string, org []byte) []byte {
	out := []byte{byte(len(endpoint) >> 8), byte(len(endpoint))}
	return append(append(out, endpoint...), org...)
}

func parseNodeInfo(v []byte) (endpoint string, org []byte) {
	if len(v) < 2 {
		return "", nil
	}
	n := int(v[0])<<8 | int(v[1])
	if len(v) < 2+n {
		return "", nil
	}
	endpoint = string(v[2 : 2+n])
	if rest := v[2+n:]; len(rest) == ed25519.PublicKeySize {
		org = bytes.Clone(rest)
	}
	return endpoint, org
}

// LiveOffer is one node's latest offer, live at the ledger's latest block
// time, as GET /v1/offers reports it. Entry is the signed offer entry
// itself (its index lets a client prove it is in the log); Endpoint and
// Organisation come from the node's registration or endpoint update.
type LiveOffer struct {
	Node         string          `json:"node"` // "ed25519:..."
	Index        uint64          `json:"index"`
	Expires      string          `json:"expires"` // RFC 3339, UTC
	Endpoint     string          `json:"endpoint,omitempty"`
	Organisation string          `json:"organisation,omitempty"`
	Entry        json.RawMessage `json:"entry"`
}

// OfferList is GET /v1/offers's answer: the offers live at AsOf (the
// serving ledger node's clock; expiries were fixed from block time),
// ordered by node key.
type OfferList struct {
	AsOf   string      `json:"as_of"`
	Height int64       `json:"height"`
	Offers []LiveOffer `json:"offers"`
}

// maxOffersListed bounds one answer of GET /v1/offers.
const maxOffersListed = 10000

func (ln *ledgerNode) handleOffers(w http.ResponseWriter, _ *http.Request) {
	ln.read(w, func(w http.ResponseWriter, r reader, st committedState) error {
		writeJSON(w, http.StatusOK, liveOffers(r, st, ln.app.now()))
		return nil
	})
}

// liveOffers lists the offers in the committed state st whose expiry is
// after now.
func liveOffers(r reader, st committedState, now time.Time) OfferList {
	out := OfferList{AsOf: now.UTC().Format(time.RFC3339Nano), Height: st.Height, Offers: []LiveOffer{}}
	c := r.tx.Bucket(bucketOffers).Cursor()
	for k, v := c.First(); k != nil && len(out.Offers) < maxOffersListed; k, v = c.Next() {
		idx, _ := getU64(v)
		exp, _ := getU64(v[8:])
		if int64(exp) <= now.Unix() || idx >= st.Size {
			continue
		}
		_, tx, ok := r.entry(idx)
		if !ok {
			continue
		}
		ep, org := parseNodeInfo(r.get(bucketNodeInfo, k))
		lo := LiveOffer{Node: protocol.FormatEd25519Key(ed25519.PublicKey(k)), Index: idx, Endpoint: ep,
			Expires: time.Unix(int64(exp), 0).UTC().Format(time.RFC3339), Entry: bytes.Clone(tx)}
		if org != nil {
			lo.Organisation = protocol.FormatEd25519Key(ed25519.PublicKey(org))
		}
		out.Offers = append(out.Offers, lo)
	}
	return out
}
