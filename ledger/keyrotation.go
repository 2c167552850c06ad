package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"net/http"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Principals' key rotation (rule version 12; the rule's form is package
// verify's CheckKeyRotation). A principal is known by the first key it
// signed with; every rule judges an entry signed with a later key of it as
// the principal's (validateEntry maps the signing key to the principal),
// and refuses entries signed with a key it rotated away from.
//
//	key_rotations   retired key (32) → next key (32) ‖ index of the rotation (8) ‖ rotations so far (8)
//	key_principals  a rotated-to key (32) → the principal's first key (32) ‖ rotations so far (8)
var (
	bucketKeyRotations  = []byte("key_rotations")
	bucketKeyPrincipals = []byte("key_principals")
)

// maxKeyRotations bounds a principal's chain of keys, which clients walk.
const maxKeyRotations = 1024

// signingPrincipal returns the principal whose key pub is, or a refusal
// if pub was rotated away from.
func signingPrincipal(v blockView, pub ed25519.PublicKey) (ed25519.PublicKey, *verify.RejectedError) {
	if r := v.get(bucketKeyRotations, pub); len(r) >= 40 {
		return nil, reject(verify.CodeUnauthorized, "the submitter key was rotated to %s by entry %d and is no longer accepted; sign with the principal's current key",
			protocol.FormatEd25519Key(ed25519.PublicKey(r[:32])), binary.BigEndian.Uint64(r[32:40]))
	}
	if p := v.get(bucketKeyPrincipals, pub); len(p) >= 32 {
		return ed25519.PublicKey(bytes.Clone(p[:32])), nil
	}
	return pub, nil
}

func ruleKeyRotated(c *ruleCtx) ([]write, *verify.RejectedError) {
	old, next, err := verify.CheckKeyRotation(c.se)
	if err != nil {
		return nil, reject(verify.CodeMalformed, "%v", err)
	}
	if err := checkSubmitterKey(next); err != nil {
		return nil, reject(verify.CodeMalformed, "key.rotated body new_key: %v", err)
	}
	if c.v.get(bucketNodes, c.pub) != nil {
		return nil, reject(verify.CodeUnauthorized, "key.rotated: the submitter is a registered node, whose key its attestation evidence binds; a node registers anew under a new key instead")
	}
	vals, err := readValidators(c.v)
	if err != nil {
		return nil, reject(verify.CodeUnavailable, "key.rotated: %v", err)
	}
	for _, val := range vals {
		switch {
		case bytes.Equal(val.PubKey, old) || bytes.Equal(val.PubKey, c.pub):
			return nil, reject(verify.CodeUnauthorized, "key.rotated: the submitter is a validator, whose consensus key rotates by governance (validator.proposed rotate)")
		case bytes.Equal(val.PubKey, next):
			return nil, reject(verify.CodeUnauthorized, "key.rotated: new_key is a validator's consensus key")
		}
	}
	if why := keyInUse(c.v, next); why != "" {
		return nil, reject(verify.CodeReplay, "key.rotated: new_key %s; a principal rotates to a key never used before", why)
	}
	var n uint64
	if p := c.v.get(bucketKeyPrincipals, old); len(p) >= 40 {
		n = binary.BigEndian.Uint64(p[32:40])
	}
	if n >= maxKeyRotations {
		return nil, reject(verify.CodeTooLarge, "key.rotated: the principal rotated its key %d times, the limit", n)
	}
	n++
	rot := append(bytes.Clone(next), be64(c.index)...)
	rot = append(rot, be64(n)...)
	return []write{
		{bucketKeyRotations, bytes.Clone(old), rot},
		{bucketKeyPrincipals, bytes.Clone(next), append(bytes.Clone(c.pub), be64(n)...)},
	}, nil
}

// keyInUse says how key was used before, or "" if never: as a submitter,
// as a principal's key, as a node's.
func keyInUse(v blockView, key ed25519.PublicKey) string {
	switch {
	case v.get(bucketKeyPrincipals, key) != nil || v.get(bucketKeyRotations, key) != nil:
		return "is already a principal's key"
	case v.get(bucketNodes, key) != nil:
		return "is a registered node's key"
	case isCurrentMember(v, key):
		return "is a member's key"
	case v.signedBefore(key):
		return "has signed entries already"
	}
	return ""
}

// hasPrefix says whether bucket holds a key starting with prefix,
// committed or in the block.
func (v blockView) hasPrefix(bucket, prefix []byte) bool {
	if v.batch != nil {
		for k := range v.batch.puts[string(bucket)] {
			if len(k) >= len(prefix) && k[:len(prefix)] == string(prefix) {
				return true
			}
		}
	}
	k, _ := v.r.tx.Bucket(bucket).Cursor().Seek(prefix)
	return k != nil && bytes.HasPrefix(k, prefix)
}

// KeyRotationStep is one key.rotated entry of a principal's chain.
type KeyRotationStep struct {
	Index uint64 `json:"index"`
	From  string `json:"from"`
	To    string `json:"to"`
}

// KeyChain is a principal's keys as GET /v1/keys/{key} reports them:
// the principal's first key, each rotation in order, the current key.
// Clients check every step themselves (client.FollowKey).
type KeyChain struct {
	Key       string            `json:"key"`
	Principal string            `json:"principal"`
	Rotations []KeyRotationStep `json:"rotations"`
	Current   string            `json:"current"`
}

// keyChain reads the chain of the principal whose key key is (or was).
func (ln *ledgerNode) keyChain(key ed25519.PublicKey) (*KeyChain, error) {
	kc := &KeyChain{Key: protocol.FormatEd25519Key(key), Rotations: []KeyRotationStep{}}
	err := ln.store.view(func(r reader) error {
		cur := key
		if p := r.get(bucketKeyPrincipals, key); len(p) >= 32 {
			cur = ed25519.PublicKey(bytes.Clone(p[:32]))
		}
		kc.Principal = protocol.FormatEd25519Key(cur)
		for range maxKeyRotations + 1 {
			rot := r.get(bucketKeyRotations, cur)
			if len(rot) < 40 {
				break
			}
			next := ed25519.PublicKey(bytes.Clone(rot[:32]))
			kc.Rotations = append(kc.Rotations, KeyRotationStep{Index: binary.BigEndian.Uint64(rot[32:40]),
				From: protocol.FormatEd25519Key(cur), To: protocol.FormatEd25519Key(next)})
			cur = next
		}
		kc.Current = protocol.FormatEd25519Key(cur)
		return nil
	})
	return kc, err
}

// handleKeys serves GET /v1/keys/{key}: key is the Ed25519 key in
// lower-case hex; the answer is its principal's chain of keys (a key
// never rotated is its own principal, with no rotations).
func (ln *ledgerNode) handleKeys(w http.ResponseWriter, r *http.Request) {
	raw, err := hex.DecodeString(r.PathValue("key"))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "key: want the 32-byte Ed25519 key in hex")
		return
	}
	kc, err := ln.keyChain(raw)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, verify.CodeUnavailable, "reading the ledger: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, kc)
}
