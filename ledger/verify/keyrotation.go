package verify

import (
	"crypto/ed25519"
	"fmt"

	"github.com/cloisterhq/cloister/api/protocol"
)

// Principals' key rotation. A principal — whoever signs entries: an
// organisation, a member, a user; not a validator (whose consensus key
// rotates by governance) and not a node (whose key its attestation
// evidence binds; it registers anew) — is known by the first key it signed
// with. A key.rotated entry, signed with its current key, names the next
// one; the next key signs the rotation statement too, so no principal can
// claim a key whose holder did not agree. From the entry's block on, the
// ledger refuses entries signed with the old key and judges entries signed
// with the new key as the principal's. Clients follow the chain of
// key.rotated entries from the principal's first key (FollowKeys), each
// checked by this one rule.

// KindKeyRotated is the kind of a principal's key rotation.
const KindKeyRotated Kind = "key.rotated"

const keyRotationDomain = "cloister/ledger/key-rotation/v1\n"

// KeyRotation is a key.rotated entry's body.
type KeyRotation struct {
	// NewKey is the principal's next key, "ed25519:<base64>".
	NewKey string `json:"new_key"`
	// NewKeySig is NewKey's signature over KeyRotationMessage.
	NewKeySig []byte `json:"new_key_sig"`
}

// KeyRotationMessage is what the new key signs: it agrees to take over
// from the old key (both in their text form).
func KeyRotationMessage(oldKey, newKey string) []byte {
	return []byte(keyRotationDomain + oldKey + "\n" + newKey + "\n")
}

// NewKeyRotation builds the body of a rotation from old's key to next.
func NewKeyRotation(old ed25519.PublicKey, next ed25519.PrivateKey) KeyRotation {
	nk := protocol.FormatEd25519Key(next.Public().(ed25519.PublicKey))
	return KeyRotation{NewKey: nk, NewKeySig: ed25519.Sign(next, KeyRotationMessage(protocol.FormatEd25519Key(old), nk))}
}

// CheckKeyRotation reads a key.rotated entry (whose own signature the
// caller checked) and returns the key it retires (its submitter) and the
// key it names, after checking the body's form and the new key's
// signature by the signature rule.
func CheckKeyRotation(se *SignedEntry) (old, next ed25519.PublicKey, err error) {
	if se.Entry.Kind != KindKeyRotated {
		return nil, nil, fmt.Errorf("entry kind %q, want %s", se.Entry.Kind, KindKeyRotated)
	}
	var r KeyRotation
	if err := strictBody(se.Entry.Body, &r); err != nil {
		return nil, nil, fmt.Errorf("%s body: %v", KindKeyRotated, err)
	}
	if old, err = protocol.ParseEd25519Key(se.Entry.Submitter); err != nil {
		return nil, nil, fmt.Errorf("%s submitter: %v", KindKeyRotated, err)
	}
	if next, err = protocol.ParseEd25519Key(r.NewKey); err != nil {
		return nil, nil, fmt.Errorf("%s body new_key: %v", KindKeyRotated, err)
	}
	if next.Equal(old) {
		return nil, nil, fmt.Errorf("%s: new_key is the submitter's own key", KindKeyRotated)
	}
	if !Signature(next, KeyRotationMessage(se.Entry.Submitter, r.NewKey), r.NewKeySig) {
		return nil, nil, fmt.Errorf("%s body new_key_sig: not new_key's signature of the rotation from %s (the new key's holder must sign it)", KindKeyRotated, se.Entry.Submitter)
	}
	return old, next, nil
}
