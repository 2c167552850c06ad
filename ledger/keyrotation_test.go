package ledger

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// TestKeyRotation: a principal's key.rotated entry, signed with its key
// and by the next, retires the old key (refused from the rotation's block
// on, in the same block too) and makes the new key act as the principal
// (its artifact registrations are the principal's); a rotation to a key
// that is not fresh, or without the new key's signature, is refused.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	c := newACLChain(t, RulesV12)
	val := seedKey(0x51)
	org1, org2, org3, other := seedKey(0xb1), seedKey(0xb2), seedKey(0xb3), seedKey(0xb4)
	pub := func(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }
	rotate := func(from, to ed25519.PrivateKey) []byte {
		return c.entry(from, KindKeyRotated, verify.NewKeyRotation(pub(from), to))
	}
	broker := pubText(seedKey(0xb7))
	artifact := func(k ed25519.PrivateKey, digest string) []byte {
		return c.entry(k, KindArtifactRegistered, acl.Artifact{Digest: digest, PlaintextSHA256: strings.Repeat("01", 32),
			Brokers: []string{broker}, Threshold: 1, Commitment: []string{strings.Repeat("02", 32)}})
	}
	d1, d2 := "sha256:"+strings.Repeat("11", 32), "sha256:"+strings.Repeat("22", 32)
	c.want([][]byte{artifact(org1, d1), artifact(other, d1)}, "ok", "ok")

	forged := verify.NewKeyRotation(pub(org1), org2)
	forged.NewKeySig = verify.NewKeyRotation(pub(org1), org3).NewKeySig
	c.want([][]byte{
		c.entry(org1, KindKeyRotated, forged),
		rotate(org1, val),
		rotate(org1, other),
		rotate(org1, org1),
		c.entry(org1, KindKeyRotated, map[string]any{"new_key": pubText(org2)}),
	}, "malformed: new_key_sig", "unauthorized: validator's consensus key", "replay: has signed entries already",
		"malformed: the submitter's own key", "malformed: new_key_sig")

	// The rotation, and the old key in the same block after it.
	c.want([][]byte{rotate(org1, org2), artifact(org1, d2)}, "ok", "unauthorized: rotated to "+pubText(org2))
	// The new key is the principal: its registration of d1 is org1's again.
	c.want([][]byte{artifact(org2, d1), artifact(org2, d2)}, "replay: registered", "ok")
	// A second rotation; the chain's keys cannot be taken by another.
	c.want([][]byte{rotate(org2, org3), rotate(other, org2), rotate(org2, seedKey(0xb5))},
		"ok", "replay: already a principal's key", "unauthorized: rotated to "+pubText(org3))
	c.want([][]byte{artifact(org3, d2), rotate(val, seedKey(0xb6))}, "replay: registered", "unauthorized: validator")
}

// TestKeyRotationBeforeV12: chains at version 11 know no key.rotated.
func TestKeyRotationBeforeV12(t *testing.T) {
	t.Parallel()
	c := newACLChain(t, RulesV11)
	a, b := seedKey(0xc1), seedKey(0xc2)
	c.want([][]byte{c.entry(a, KindKeyRotated, verify.NewKeyRotation(a.Public().(ed25519.PublicKey), b))},
		"malformed: not one of the ledger's kinds")
}
