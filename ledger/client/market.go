package client

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// RequestState is a marketplace request's state as the ledger keeps it
// (rule version 5): its fencing token, the live assignment, the nodes
// that failed it, the accounting entry that finished it.
type RequestState struct {
	ID          string   `json:"id"`
	Index       uint64   `json:"index"`
	Consumer    string   `json:"consumer"`
	Deadline    string   `json:"deadline"`
	MaxPrice    string   `json:"max_price,omitempty"`
	Token       uint64   `json:"token"`
	Live        uint64   `json:"live,omitempty"`
	Node        string   `json:"node,omitempty"`
	Session     string   `json:"session,omitempty"`
	Dispatcher  string   `json:"dispatcher,omitempty"`
	RunDeadline string   `json:"run_deadline,omitempty"`
	Assignments []uint64 `json:"assignments,omitempty"`
	Failures    []uint64 `json:"failures,omitempty"`
	Failed      []string `json:"failed_nodes,omitempty"`
	Finished    uint64   `json:"finished,omitempty"`
}

// MarketRequest is a request's state with the signed entries it was built
// from, each checked here (signature, and one of the market kinds).
type MarketRequest struct {
	State   RequestState          `json:"state"`
	Entries []*verify.SignedEntry `json:"-"`
	Raw     []json.RawMessage     `json:"entries"`
	Height  int64                 `json:"height"`
}

// ProviderRecord is a provider's record of marketplace runs: Recent is
// its latest outcomes, newest first (true: failed).
type ProviderRecord struct {
	Node      string   `json:"node"`
	Runs      uint64   `json:"runs"`
	Failures  uint64   `json:"failures"`
	Recent    []bool   `json:"recent"`
	LatencyMs []uint64 `json:"latency_ms"`
}

// MarketRecords is every provider's record.
type MarketRecords struct {
	Height  int64            `json:"height"`
	Records []ProviderRecord `json:"records"`
}

// MarketOpen lists the requests neither finished nor past their deadline.
type MarketOpen struct {
	Height   int64          `json:"height"`
	Requests []RequestState `json:"requests"`
}

const maxMarketJSON = 64 << 20

// MarketRequest fetches request id's state (ErrNotFound if no such
// request). The state is the server's reading; the entries it names are
// returned signed, and checked here.
func (c *Client) MarketRequest(ctx context.Context, id string) (*MarketRequest, error) {
	if b, err := hex.DecodeString(id); err != nil || len(b) != 32 {
		return nil, errors.New("market request id: want 64 lower-case hex digits")
	}
	b, err := c.do(ctx, "GET", "/v1/market/requests/"+id, nil, nil, maxMarketJSON, false)
	if err != nil {
		return nil, err
	}
	var out MarketRequest
	if err := decodeStrict(b, &out); err != nil {
		return nil, malformed("market request: %v", err)
	}
	if out.State.ID != id {
		return nil, malformed("market request: answer for %q, asked for %s", out.State.ID, id)
	}
	for i, raw := range out.Raw {
		se, err := verify.DecodeEntry(raw)
		if err != nil {
			return nil, malformed("market request entry %d: %v", i, err)
		}
		if err := c.verifySig(raw, se); err != nil {
			return nil, malformed("market request entry %d: %v", i, err)
		}
		switch se.Entry.Kind {
		case "market.request", "market.assigned", "market.failed", "market.accounted":
		default:
			return nil, malformed("market request entry %d: a %s entry", i, se.Entry.Kind)
		}
		out.Entries = append(out.Entries, se)
	}
	return &out, nil
}

// MarketRecords fetches every provider's record of runs.
func (c *Client) MarketRecords(ctx context.Context) (*MarketRecords, error) {
	b, err := c.do(ctx, "GET", "/v1/market/records", nil, nil, maxMarketJSON, false)
	if err != nil {
		return nil, err
	}
	var out MarketRecords
	if err := decodeStrict(b, &out); err != nil {
		return nil, malformed("market records: %v", err)
	}
	return &out, nil
}

// MarketOpen fetches the open requests.
func (c *Client) MarketOpen(ctx context.Context) (*MarketOpen, error) {
	b, err := c.do(ctx, "GET", "/v1/market/open", nil, nil, maxMarketJSON, false)
	if err != nil {
		return nil, err
	}
	var out MarketOpen
	if err := decodeStrict(b, &out); err != nil {
		return nil, malformed("market open: %v", err)
	}
	return &out, nil
}
