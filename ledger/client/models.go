package client

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sync"

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
		pe, err := c.models.published(m.Entry)
		if err != nil {
			return nil, malformed("model %s: %v", m.Name, err)
		}
		if pe.kind != model.KindPublished || pe.submitter != m.Owner {
			return nil, malformed("model %s: a %s entry by %s, listed as published by %s", m.Name, pe.kind, pe.submitter, m.Owner)
		}
		pm := pe.model
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

// modelCache keeps the models decoded from model.published entries, by
// the SHA-256 of each entry's exact bytes (at most maxCachedModels; when
// full it starts over): every call of a federated model reads the list,
// on both sides, and decoding the entry, checking its signature and
// decoding the model were most of a reading's cost (about 0.35 ms for a
// model with its schemas). Only byte-identical entries are taken from it,
// so what is accepted is exactly what the checks would accept; what
// changes on the ledger — a new version, a revocation, the endpoints, the
// owner listed — comes with each reading and is checked each time.
type modelCache struct {
	mu   sync.Mutex
	byID map[[32]byte]*publishedEntry
}

const maxCachedModels = 1024

// publishedEntry is a checked entry: its kind, signer and, for a
// model.published, the model it publishes. The model is shared by every
// reading that lists the entry: callers of Models do not modify it.
type publishedEntry struct {
	kind, submitter string
	model           *model.Model
}

// published decodes and checks raw, a signed entry listed as a model's,
// or takes it from the cache.
func (mc *modelCache) published(raw []byte) (*publishedEntry, error) {
	h := sha256.Sum256(raw)
	mc.mu.Lock()
	pe, ok := mc.byID[h]
	mc.mu.Unlock()
	if ok {
		return pe, nil
	}
	se, err := verify.DecodeEntry(raw)
	if err != nil {
		return nil, err
	}
	if err := se.VerifySignature(); err != nil {
		return nil, err
	}
	pe = &publishedEntry{kind: string(se.Entry.Kind), submitter: se.Entry.Submitter}
	if se.Entry.Kind != model.KindPublished {
		return pe, nil // refused by the caller, not kept
	}
	if pe.model, err = model.DecodeModel(se.Entry.Body); err != nil {
		return nil, err
	}
	mc.mu.Lock()
	if mc.byID == nil || len(mc.byID) >= maxCachedModels {
		mc.byID = map[[32]byte]*publishedEntry{}
	}
	mc.byID[h] = pe
	mc.mu.Unlock()
	return pe, nil
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
