package client

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/cloisterhq/cloister/ledger/model"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// PublishedModel is a model's current version as the ledger holds it:
// the model.published entry (checked here), its owner, whether that
// version is revoked, and the serving nodes' endpoints.
type PublishedModel struct {
	model.Model
	Owner     string   `json:"owner"`
	Index     uint64   `json:"index"`             // the model.published entry
	Revoked   uint64   `json:"revoked,omitempty"` // the model.revoked entry, 0 while live
	Calls     uint64   `json:"calls"`             // call receipts of all versions
	Endpoints []string `json:"endpoints"`         // in Nodes' order
}

// ModelList is the published models at Height.
type ModelList struct {
	Height int64            `json:"height"`
	Models []PublishedModel `json:"models"`
}

const maxModelsJSON = 256 << 20

// Models fetches every published model. Each listed entry is checked here
// — its signature, that it is a model.published by the owner listed, of
// the version listed — so a ledger API cannot forge a model; whether a
// version is revoked, the call counts and the endpoints are the server's
// reading of its state (the index lets a client prove the entry is in the
// log).
func (c *Client) Models(ctx context.Context) (*ModelList, error) {
	b, err := c.do(ctx, "GET", "/v1/models", nil, nil, maxModelsJSON, false)
	if err != nil {
		return nil, err
	}
	var raw struct {
		Height int64 `json:"height"`
		Models []struct {
			Name      string          `json:"name"`
			Owner     string          `json:"owner"`
			Version   uint64          `json:"version"`
			Index     uint64          `json:"index"`
			Revoked   uint64          `json:"revoked"`
			Nodes     []string        `json:"nodes"`
			Functions []string        `json:"functions"`
			Allow     []string        `json:"allow"`
			Budget    uint64          `json:"budget"`
			Mode      string          `json:"mode"`
			Calls     uint64          `json:"calls"`
			Entry     json.RawMessage `json:"entry"`
			Endpoints []string        `json:"endpoints"`
		} `json:"models"`
	}
	if err := decodeStrict(b, &raw); err != nil {
		return nil, malformed("models: %v", err)
	}
	out := &ModelList{Height: raw.Height, Models: make([]PublishedModel, 0, len(raw.Models))}
	for _, m := range raw.Models {
		se, err := verify.DecodeEntry(m.Entry)
		if err != nil {
			return nil, malformed("model %s: %v", m.Name, err)
		}
		if err := se.VerifySignature(); err != nil {
			return nil, malformed("model %s: %v", m.Name, err)
		}
		if se.Entry.Kind != model.KindPublished || se.Entry.Submitter != m.Owner {
			return nil, malformed("model %s: a %s entry by %s, listed as published by %s", m.Name, se.Entry.Kind, se.Entry.Submitter, m.Owner)
		}
		pm, err := model.DecodeModel(se.Entry.Body)
		if err != nil {
			return nil, malformed("model %s: %v", m.Name, err)
		}
		if pm.Name != m.Name || pm.Version != m.Version {
			return nil, malformed("model %s version %d: the entry publishes %s version %d", m.Name, m.Version, pm.Name, pm.Version)
		}
		if len(m.Endpoints) != len(pm.Nodes) {
			return nil, malformed("model %s: %d endpoints for %d nodes", m.Name, len(m.Endpoints), len(pm.Nodes))
		}
		out.Models = append(out.Models, PublishedModel{Model: *pm, Owner: m.Owner, Index: m.Index, Revoked: m.Revoked,
			Calls: m.Calls, Endpoints: m.Endpoints})
	}
	return out, nil
}

// Model returns the published model name, or an error saying it is not
// published or its current version is revoked.
func (l *ModelList) Model(name string) (*PublishedModel, error) {
	for i := range l.Models {
		if l.Models[i].Name == name {
			if l.Models[i].Revoked != 0 {
				return &l.Models[i], fmt.Errorf("%w: model %s version %d was revoked by its owner (entry %d)", model.ErrRevoked, name, l.Models[i].Version, l.Models[i].Revoked)
			}
			return &l.Models[i], nil
		}
	}
	return nil, fmt.Errorf("%w: %s", model.ErrNotPublished, name)
}

// Endpoint returns the endpoint of node (a platform key) serving m.
func (m *PublishedModel) Endpoint(node string) string {
	for i, n := range m.Nodes {
		if n == node && i < len(m.Endpoints) {
			return m.Endpoints[i]
		}
	}
	return ""
}
