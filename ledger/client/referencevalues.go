package client

import (
	"context"
	"encoding/json"
	"net/url"
)

// ReferenceValues is a class's reference values in force on the ledger
// (GET /v1/reference-values/{class}): the entry that set them (rule
// version 13) or proposed them (version 16), the height that decided a
// proposal and its approvals' entries. The server is trusted for this
// answer as for any state it serves; the entries it names are in the log.
type ReferenceValues struct {
	Index     uint64          `json:"index"`
	Values    json.RawMessage `json:"values"`
	Height    int64           `json:"height,omitempty"`
	Approvals []uint64        `json:"approvals,omitempty"`
}

// ReferenceValues fetches the reference values in force for class;
// ErrNotFound when the consortium set none.
func (c *Client) ReferenceValues(ctx context.Context, class string) (*ReferenceValues, error) {
	b, err := c.do(ctx, "GET", "/v1/reference-values/"+url.PathEscape(class), nil, nil, 1<<20, false)
	if err != nil {
		return nil, err
	}
	var rv ReferenceValues
	if err := decodeStrict(b, &rv); err != nil {
		return nil, malformed("reference values: %v", err)
	}
	return &rv, nil
}
