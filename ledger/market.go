package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/deal"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/policy"
)

// Rule version 5: the marketplace's kinds (package deal gives their
// bodies, decisions 0111–0112):
//
//   - market.request, signed by a consumer, opens a request under the
//     consumer's random id until its deadline (at most 24 h ahead);
//   - market.assigned, signed by a dispatcher, gives the request to one
//     session of a registered node with a live offer, under a fencing
//     token one more than the request's last. While an assignment is live
//     (not failed, not accounted) every other assignment is refused, so
//     two dispatchers never run one request twice; the ranking inputs it
//     carries must be true of the ledger (each candidate's live offer and
//     price, its failures among its last runs), the price within the
//     request's maximum, the session created for the policy it carries;
//   - market.failed ends the live assignment of a token (the dispatcher
//     that made it, the consumer, or anyone once its run deadline is past):
//     the provider's record counts a failure, the request is open again,
//     and the provider may not be assigned this request again;
//   - market.accounted, signed by the consumer, finishes the request with
//     the run's figures; only for the live token, so a late result from an
//     abandoned provider is never counted.
//
// Grants made under a delegation may also be limited to nodes of listed
// organisations (acl.Limits.Organisations).
//
// State (JSON records):
//
//	market_requests  request id (32) -> requestRecord
//	market_records   node key (32) -> providerRecord
var (
	bucketMarketRequests = []byte("market_requests")
	bucketMarketRecords  = []byte("market_records")
)

// RequestState is a request's state as the ledger keeps it and
// GET /v1/market/requests/{id} serves it.
type RequestState struct {
	ID       string `json:"id"`
	Index    uint64 `json:"index"` // the market.request entry
	Consumer string `json:"consumer"`
	Deadline string `json:"deadline"`
	MaxPrice string `json:"max_price,omitempty"`
	// Token is the latest assignment's fencing token (0: never assigned);
	// Live its entry while it is live, 0 otherwise.
	Token       uint64   `json:"token"`
	Live        uint64   `json:"live,omitempty"`
	Node        string   `json:"node,omitempty"`
	Session     string   `json:"session,omitempty"`
	Dispatcher  string   `json:"dispatcher,omitempty"`
	RunDeadline string   `json:"run_deadline,omitempty"`
	Assignments []uint64 `json:"assignments,omitempty"`
	Failures    []uint64 `json:"failures,omitempty"`
	Failed      []string `json:"failed_nodes,omitempty"`
	Finished    uint64   `json:"finished,omitempty"` // the market.accounted entry
}

// ProviderRecord is a provider's record of runs: Recent holds the latest
// outcomes, newest first (true: failed), at most recordKept; latencies
// the latest runs' wall times in ms, newest first.
type ProviderRecord struct {
	Node      string   `json:"node"`
	Runs      uint64   `json:"runs"`
	Failures  uint64   `json:"failures"`
	Recent    []bool   `json:"recent"`
	LatencyMs []uint64 `json:"latency_ms"`
}

const (
	recordKept  = 10 // market.RecordWindow: the outcomes a rank counts
	latencyKept = 100
)

// Failures counts the failures among r's recent outcomes.
func (r *ProviderRecord) recentFailures() int {
	n := 0
	for _, f := range r.Recent {
		if f {
			n++
		}
	}
	return n
}

func (r *ProviderRecord) add(failed bool, wallMs uint64) {
	r.Runs++
	if failed {
		r.Failures++
	} else {
		r.LatencyMs = append([]uint64{wallMs}, r.LatencyMs[:min(len(r.LatencyMs), latencyKept-1)]...)
	}
	r.Recent = append([]bool{failed}, r.Recent[:min(len(r.Recent), recordKept-1)]...)
}

func (c *ruleCtx) marketRequest(id string) (*RequestState, *verify.RejectedError) {
	k, _ := hex.DecodeString(id)
	rs, ok := getRecord[RequestState](c.v, bucketMarketRequests, k)
	if !ok {
		return nil, reject(verify.CodeMissingReference, "%s: no market.request has id %s", c.body.kind, id)
	}
	return rs, nil
}

func putRequest(rs *RequestState) write {
	k, _ := hex.DecodeString(rs.ID)
	return putRecord(bucketMarketRequests, k, rs)
}

func providerRecord(v blockView, node ed25519.PublicKey) *ProviderRecord {
	r, ok := getRecord[ProviderRecord](v, bucketMarketRecords, node)
	if !ok {
		return &ProviderRecord{Node: protocol.FormatEd25519Key(node), Recent: []bool{}, LatencyMs: []uint64{}}
	}
	return r
}

func ruleMarketRequest(c *ruleCtx) ([]write, *verify.RejectedError) {
	r, err := deal.DecodeRequest(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	k, _ := hex.DecodeString(r.ID)
	if prev := c.v.get(bucketMarketRequests, k); prev != nil {
		return nil, reject(verify.CodeReplay, "market.request: id %s is taken (choose 32 fresh random bytes)", r.ID)
	}
	dl := r.DeadlineTime()
	if !c.now.Before(dl) || dl.Sub(c.now) > deal.MaxDeadline {
		return nil, reject(verify.CodeMalformed, "market.request: deadline %s must lie after the ledger's time %s and within %s of it", r.Deadline, acl.FormatTime(c.now), deal.MaxDeadline)
	}
	return []write{putRequest(&RequestState{ID: r.ID, Index: c.index, Consumer: protocol.FormatEd25519Key(c.pub),
		Deadline: r.Deadline, MaxPrice: r.MaxPrice})}, nil
}

func ruleMarketAssigned(c *ruleCtx) ([]write, *verify.RejectedError) {
	a, err := deal.DecodeAssignment(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	rs, rej := c.marketRequest(a.Request)
	if rej != nil {
		return nil, rej
	}
	switch {
	case rs.Finished != 0:
		return nil, reject(verify.CodeReplay, "market.assigned: request %s was finished by entry %d", a.Request, rs.Finished)
	case rs.Live != 0:
		return nil, reject(verify.CodeReplay, "market.assigned: request %s has a live assignment (entry %d, token %d, node %s); fail it first", a.Request, rs.Live, rs.Token, rs.Node)
	case a.Token != rs.Token+1:
		return nil, reject(verify.CodeReplay, "market.assigned: token %d is stale; the request's next token is %d", a.Token, rs.Token+1)
	}
	dl, _ := acl.ParseTime(rs.Deadline)
	rd, _ := acl.ParseTime(a.RunDeadline)
	if !c.now.Before(dl) {
		return nil, reject(verify.CodeUnauthorized, "market.assigned: request %s passed its deadline %s", a.Request, rs.Deadline)
	}
	if !c.now.Before(rd) || rd.After(dl) {
		return nil, reject(verify.CodeMalformed, "market.assigned: run_deadline %s must lie after the ledger's time and by the request's deadline %s", a.RunDeadline, rs.Deadline)
	}
	if slices.Contains(rs.Failed, a.Node) {
		return nil, reject(verify.CodeUnauthorized, "market.assigned: node %s already failed request %s", a.Node, a.Request)
	}
	chosen, ok := a.Chosen()
	if !ok {
		return nil, reject(verify.CodeMalformed, "market.assigned: node %s is not among the candidates", a.Node)
	}
	for _, s := range a.Skipped {
		if s.Node == a.Node {
			return nil, reject(verify.CodeMalformed, "market.assigned: node %s is both chosen and skipped", a.Node)
		}
	}
	// The ranking inputs must be the ledger's: each candidate's live
	// offer and its price, its recent failures.
	for _, cand := range a.Candidates {
		pk, _ := protocol.ParseEd25519Key(cand.Node)
		ov := c.v.get(bucketOffers, pk)
		if len(ov) != 16 {
			return nil, reject(verify.CodeMissingReference, "market.assigned: candidate %s has no offer", cand.Node)
		}
		idx, _ := getU64(ov)
		exp, _ := getU64(ov[8:])
		if idx != cand.Offer || int64(exp) <= c.now.Unix() {
			return nil, reject(verify.CodeMissingReference, "market.assigned: candidate %s's live offer is not entry %d (its latest is %d, expiring at unix %d)", cand.Node, cand.Offer, idx, exp)
		}
		if p := offerPrice(c.v, idx); p != cand.Price {
			return nil, reject(verify.CodeMalformed, "market.assigned: candidate %s's offer price is %q, not %q", cand.Node, p, cand.Price)
		}
		if f := providerRecord(c.v, pk).recentFailures(); f != cand.Failures {
			return nil, reject(verify.CodeMalformed, "market.assigned: candidate %s has %d failures among its last %d runs, not %d", cand.Node, f, recordKept, cand.Failures)
		}
	}
	if rs.MaxPrice != "" && deal.DecimalLess(rs.MaxPrice, chosen.Price) {
		return nil, reject(verify.CodeUnauthorized, "market.assigned: node %s's price %s is above the request's maximum %s", a.Node, chosen.Price, rs.MaxPrice)
	}
	node, _ := protocol.ParseEd25519Key(a.Node)
	ref := c.v.get(bucketSessions, sessionKey(node, a.Session))
	if len(ref) != 40 {
		return nil, reject(verify.CodeMissingReference, "market.assigned: node %s has no session.created entry for session %s", a.Node, a.Session)
	}
	if ph := hex.EncodeToString(ref[8:]); ph != a.PolicyHash {
		return nil, reject(verify.CodeMalformed, "market.assigned: session %s was created for policy %s, not %s", a.Session, ph, a.PolicyHash)
	}
	p, err := policy.Parse(a.Policy)
	if err != nil {
		return nil, reject(verify.CodeMalformed, "market.assigned policy: %v", err)
	}
	if p.HashHex() != a.PolicyHash {
		return nil, reject(verify.CodeMalformed, "market.assigned: the policy hashes to %s, not policy_hash %s", p.HashHex(), a.PolicyHash)
	}
	rs.Token, rs.Live, rs.Node, rs.Session = a.Token, c.index, a.Node, a.Session
	rs.Dispatcher, rs.RunDeadline = protocol.FormatEd25519Key(c.pub), a.RunDeadline
	rs.Assignments = append(rs.Assignments, c.index)
	return []write{putRequest(rs)}, nil
}

func ruleMarketFailed(c *ruleCtx) ([]write, *verify.RejectedError) {
	f, err := deal.DecodeFailure(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	rs, rej := c.marketRequest(f.Request)
	if rej != nil {
		return nil, rej
	}
	if rs.Live == 0 || f.Token != rs.Token {
		return nil, reject(verify.CodeReplay, "market.failed: token %d of request %s is not live (latest token %d, live entry %d)", f.Token, f.Request, rs.Token, rs.Live)
	}
	who := protocol.FormatEd25519Key(c.pub)
	rd, _ := acl.ParseTime(rs.RunDeadline)
	if who != rs.Dispatcher && who != rs.Consumer && c.now.Before(rd) {
		return nil, reject(verify.CodeUnauthorized, "market.failed: until its run deadline %s, only the dispatcher that made assignment %d or the consumer fails it", rs.RunDeadline, rs.Live)
	}
	node, _ := protocol.ParseEd25519Key(rs.Node)
	pr := providerRecord(c.v, node)
	pr.add(true, 0)
	rs.Failed = append(rs.Failed, rs.Node)
	rs.Failures = append(rs.Failures, c.index)
	rs.Live, rs.Node, rs.Session, rs.Dispatcher, rs.RunDeadline = 0, "", "", "", ""
	return []write{putRequest(rs), putRecord(bucketMarketRecords, bytes.Clone(node), pr)}, nil
}

func ruleMarketAccounted(c *ruleCtx) ([]write, *verify.RejectedError) {
	a, err := deal.DecodeAccount(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	rs, rej := c.marketRequest(a.Request)
	if rej != nil {
		return nil, rej
	}
	switch {
	case protocol.FormatEd25519Key(c.pub) != rs.Consumer:
		return nil, reject(verify.CodeUnauthorized, "market.accounted: only the consumer that made request %s accounts for it", a.Request)
	case rs.Finished != 0:
		return nil, reject(verify.CodeReplay, "market.accounted: request %s was finished by entry %d", a.Request, rs.Finished)
	case rs.Live == 0 || a.Token != rs.Token:
		return nil, reject(verify.CodeReplay, "market.accounted: token %d of request %s is not live (latest token %d); a result from an abandoned assignment is not counted", a.Token, a.Request, rs.Token)
	case a.Provider != rs.Node:
		return nil, reject(verify.CodeMalformed, "market.accounted: token %d was assigned to %s, not %s", a.Token, rs.Node, a.Provider)
	}
	node, _ := protocol.ParseEd25519Key(rs.Node)
	pr := providerRecord(c.v, node)
	pr.add(false, a.WallMillis)
	rs.Finished, rs.Live = c.index, 0
	return []write{putRequest(rs), putRecord(bucketMarketRecords, bytes.Clone(node), pr)}, nil
}

// ruleACLDelegatedV5 takes the organisations limit, which version 3 refuses.
func ruleACLDelegatedV5(c *ruleCtx) ([]write, *verify.RejectedError) { return aclDelegated(c, RulesV5) }

// ruleACLGrantedV5 is version 3's grant rule plus the organisations limit
// of the delegation it is made under.
func ruleACLGrantedV5(c *ruleCtx) ([]write, *verify.RejectedError) {
	ws, rej := ruleACLGrantedV3(c)
	if rej != nil {
		return nil, rej
	}
	return organisationsLimit(c, ws)
}

// organisationsLimit judges the organisations limit of the delegation a
// grant accepted by the earlier checks (writes ws) was made under.
func organisationsLimit(c *ruleCtx, ws []write) ([]write, *verify.RejectedError) {
	g, _ := acl.DecodeGrant(c.raw())
	if g.Delegation == nil {
		return ws, nil
	}
	d, _ := getRecord[delegationRecord](c.v, bucketDelegations, be64(*g.Delegation))
	org := ""
	if g.Grantee.Specific() {
		node, _ := protocol.ParseEd25519Key(g.Grantee.Node)
		if _, o := parseNodeInfo(c.v.get(bucketNodeInfo, node)); o != nil {
			org = protocol.FormatEd25519Key(ed25519.PublicKey(o))
		}
	}
	if err := d.Delegation.PermitsOrganisation(g, org); err != nil {
		return nil, reject(verify.CodeUnauthorized, "acl.granted under delegation %d: %v", *g.Delegation, err)
	}
	return ws, nil
}

// offerPrice reads the price of the offer entry at index i ("" if none).
func offerPrice(v blockView, i uint64) string {
	var b struct {
		Price string `json:"price"`
	}
	readEntryBody(v, i, &b)
	return b.Price
}

// readEntryBody decodes the body of the stored entry at index i into b,
// leaving b as it is if there is none.
func readEntryBody(v blockView, i uint64, b any) {
	tx, ok := v.entryTx(i)
	if !ok || len(tx) == 0 {
		return
	}
	if se, err := verify.DecodeEntry(tx); err == nil {
		json.Unmarshal(se.Entry.Body, b)
	}
}

// MarketRequest is GET /v1/market/requests/{id}'s answer: the request's
// state and the signed entries it was built from (the request, every
// assignment, failure and the accounting), so a client checks each one's
// signature and kind itself.
type MarketRequest struct {
	State   RequestState      `json:"state"`
	Entries []json.RawMessage `json:"entries"`
	Height  int64             `json:"height"`
}

// MarketRecords is GET /v1/market/records's answer: every provider's
// record, by node key.
type MarketRecords struct {
	Height  int64            `json:"height"`
	Records []ProviderRecord `json:"records"`
}

// MarketOpen is GET /v1/market/open's answer: the requests neither
// finished nor past their deadline (as of the serving node's clock), for
// dispatchers resuming after a restart.
type MarketOpen struct {
	Height   int64          `json:"height"`
	Requests []RequestState `json:"requests"`
}

const maxMarketListed = 10000

func (ln *ledgerNode) handleMarketRequest(w http.ResponseWriter, r *http.Request) {
	id, err := hex.DecodeString(r.PathValue("id"))
	if err != nil || len(id) != 32 {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "request id: want 64 lower-case hex digits")
		return
	}
	ln.read(w, func(w http.ResponseWriter, rd reader, st committedState) error {
		raw := rd.get(bucketMarketRequests, id)
		var rs RequestState
		if raw == nil || json.Unmarshal(raw, &rs) != nil {
			writeError(w, http.StatusNotFound, verify.CodeNotFound, "no market.request has id %x", id)
			return nil
		}
		out := MarketRequest{State: rs, Height: st.Height}
		idx := append(append([]uint64{rs.Index}, rs.Assignments...), rs.Failures...)
		if rs.Finished != 0 {
			idx = append(idx, rs.Finished)
		}
		slices.Sort(idx)
		for _, i := range idx {
			if _, tx, ok := rd.entry(i); ok {
				out.Entries = append(out.Entries, bytes.Clone(tx))
			}
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	})
}

func (ln *ledgerNode) handleMarketRecords(w http.ResponseWriter, _ *http.Request) {
	ln.read(w, func(w http.ResponseWriter, rd reader, st committedState) error {
		out := MarketRecords{Height: st.Height, Records: []ProviderRecord{}}
		c := rd.tx.Bucket(bucketMarketRecords).Cursor()
		for k, v := c.First(); k != nil && len(out.Records) < maxMarketListed; k, v = c.Next() {
			var pr ProviderRecord
			if json.Unmarshal(v, &pr) == nil {
				out.Records = append(out.Records, pr)
			}
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	})
}

func (ln *ledgerNode) handleMarketOpen(w http.ResponseWriter, _ *http.Request) {
	now := ln.app.now()
	ln.read(w, func(w http.ResponseWriter, rd reader, st committedState) error {
		out := MarketOpen{Height: st.Height, Requests: []RequestState{}}
		c := rd.tx.Bucket(bucketMarketRequests).Cursor()
		for k, v := c.First(); k != nil && len(out.Requests) < maxMarketListed; k, v = c.Next() {
			var rs RequestState
			if json.Unmarshal(v, &rs) != nil || rs.Finished != 0 {
				continue
			}
			if dl, err := acl.ParseTime(rs.Deadline); err != nil || !now.Before(dl) {
				continue
			}
			out.Requests = append(out.Requests, rs)
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	})
}
