package client

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"

	"github.com/cloisterhq/cloister/api/protocol"
)

// Member is a consortium membership as the ledger's API reports it.
type Member struct {
	Key      string `json:"member"` // "ed25519:..."
	Name     string `json:"name,omitempty"`
	Admitted uint64 `json:"admitted"`          // index of the member.admitted entry
	Removed  uint64 `json:"removed,omitempty"` // index of the member.removed entry; 0 while a member
}

// Member fetches key's consortium membership (admitted at, removed at);
// ErrNotFound if the key was never admitted. The answer is
// the server's reading of its state: the ledger proves entries, not the
// state they build, so a node that decides on it trusts its ledger API
// (its own organisation's validator).
func (c *Client) Member(ctx context.Context, key ed25519.PublicKey) (*Member, error) {
	if len(key) != ed25519.PublicKeySize {
		return nil, errors.New("ledger member: want a 32-byte Ed25519 key")
	}
	b, err := c.do(ctx, "GET", "/v1/members/"+hex.EncodeToString(key), nil, nil, maxSmallResponse, false)
	if err != nil {
		return nil, err
	}
	var m Member
	if err := decodeStrict(b, &m); err != nil {
		return nil, malformed("member: %v", err)
	}
	if m.Key != protocol.FormatEd25519Key(key) {
		return nil, malformed("member: answer for %q, asked for %s", m.Key, protocol.FormatEd25519Key(key))
	}
	return &m, nil
}

// IsMember reports whether key is a consortium member now (see Member).
func (c *Client) IsMember(ctx context.Context, key ed25519.PublicKey) (bool, error) {
	m, err := c.Member(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return m.Removed == 0, nil
}
