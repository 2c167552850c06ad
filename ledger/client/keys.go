package client

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// KeyRotation is one verified step of a principal's chain of keys.
type KeyRotation struct {
	Index    uint64
	From, To ed25519.PublicKey
}

// KeyChain is a principal's chain of keys, every step verified.
type KeyChain struct {
	// Principal is the principal's first key: the ledger judges entries
	// signed with any later key of the chain as this principal's.
	Principal ed25519.PublicKey
	Rotations []KeyRotation
	// Current is the key the ledger accepts for the principal now (as of
	// cp); every earlier key is refused.
	Current ed25519.PublicKey
}

type keyChainJSON struct {
	Key       string `json:"key"`
	Principal string `json:"principal"`
	Rotations []struct {
		Index uint64 `json:"index"`
		From  string `json:"from"`
		To    string `json:"to"`
	} `json:"rotations"`
	Current string `json:"current"`
}

// FollowKey follows the chain of keys of the principal whose key key is
// or was, as of checkpoint cp (one the caller verified, Verify's): it asks
// the server for the chain's key.rotated entries, then fetches each with
// its inclusion proof in cp and checks it by the one rotation rule — signed
// by the chain's key before it, naming the next, countersigned by the next
// — and that key is one of the chain's keys. The server can hide a
// rotation not yet in cp, or withhold the latest one (the log proves
// entries, not their absence); it cannot invent one.
func (c *Client) FollowKey(ctx context.Context, cp *verify.Checkpoint, key ed25519.PublicKey) (*KeyChain, error) {
	if len(key) != ed25519.PublicKeySize {
		return nil, errors.New("ledger key: want a 32-byte Ed25519 key")
	}
	b, err := c.do(ctx, "GET", "/v1/keys/"+hex.EncodeToString(key), nil, nil, maxSmallResponse*16, false)
	if err != nil {
		return nil, err
	}
	var kj keyChainJSON
	if err := decodeStrict(b, &kj); err != nil {
		return nil, malformed("key chain: %v", err)
	}
	if kj.Key != protocol.FormatEd25519Key(key) {
		return nil, malformed("key chain: answer for %q, asked for %s", kj.Key, protocol.FormatEd25519Key(key))
	}
	p, err := protocol.ParseEd25519Key(kj.Principal)
	if err != nil {
		return nil, malformed("key chain principal: %v", err)
	}
	kc := &KeyChain{Principal: p, Current: p}
	seen := p.Equal(key)
	for _, step := range kj.Rotations {
		e, err := c.verifyEntry(ctx, cp, step.Index)
		if err != nil {
			return nil, err
		}
		from, to, err := verify.CheckKeyRotation(e.Signed)
		if err != nil {
			return nil, verr(verify.ErrEntrySignature, "entry %d, given as a rotation of %s: %v", step.Index, protocol.FormatEd25519Key(kc.Current), err)
		}
		if !from.Equal(kc.Current) {
			return nil, verr(verify.ErrEntrySignature, "entry %d rotates %s, but the chain's key before it is %s", step.Index, protocol.FormatEd25519Key(from), protocol.FormatEd25519Key(kc.Current))
		}
		kc.Rotations = append(kc.Rotations, KeyRotation{Index: step.Index, From: from, To: to})
		kc.Current = to
		seen = seen || to.Equal(key)
	}
	if kj.Current != protocol.FormatEd25519Key(kc.Current) {
		return nil, malformed("key chain of %s: the server says the current key is %s, its rotations lead to %s", kj.Principal, kj.Current, protocol.FormatEd25519Key(kc.Current))
	}
	if !seen {
		return nil, malformed("key chain of %s does not hold the key asked for", kj.Principal)
	}
	return kc, nil
}
