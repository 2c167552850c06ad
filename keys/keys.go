package keys

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"filippo.io/edwards25519"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/seal"
)

// SealingPrefix starts the text form of a sealing (HPKE) public key. The
// signing key's prefix is protocol.Ed25519KeyPrefix.
const SealingPrefix = "hpke:"

// ErrFormat marks a key file or key string that does not follow the format.
var ErrFormat = errors.New("keys: bad format")

// ErrWeakKey marks a well-formed public key that must not be trusted: an
// Ed25519 point of small order.
var ErrWeakKey = errors.New("keys: weak key")

// PrivateKey is a principal's signing and sealing key pair.
type PrivateKey struct {
	signing ed25519.PrivateKey
	sealing hpke.PrivateKey
}

// PublicKey is the public half of a PrivateKey.
type PublicKey struct {
	Signing ed25519.PublicKey
	Sealing hpke.PublicKey
}

// Generate returns a fresh key pair from crypto/rand.
func Generate() (*PrivateKey, error) {
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("keys: generating Ed25519 key: %w", err)
	}
	hk, err := seal.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("keys: generating HPKE key: %w", err)
	}
	return &PrivateKey{signing: sk, sealing: hk}, nil
}

// FromSeeds builds a key pair deterministically from a 32-byte Ed25519 seed
// and a 32-byte MLKEM768-X25519 seed. It exists for test vectors and for
// keys derived inside an isolate; anything else should use Generate.
func FromSeeds(signingSeed, sealingSeed []byte) (*PrivateKey, error) {
	if len(signingSeed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: Ed25519 seed is %d bytes, expected %d", ErrFormat, len(signingSeed), ed25519.SeedSize)
	}
	hk, err := seal.KEM().NewPrivateKey(sealingSeed)
	if err != nil {
		return nil, fmt.Errorf("%w: MLKEM768-X25519 seed: %v", ErrFormat, err)
	}
	return &PrivateKey{signing: ed25519.NewKeyFromSeed(signingSeed), sealing: hk}, nil
}

// Signer returns the Ed25519 signing key.
func (k *PrivateKey) Signer() ed25519.PrivateKey { return k.signing }

// SealingKey returns the HPKE private key sealed data is opened with.
func (k *PrivateKey) SealingKey() hpke.PrivateKey { return k.sealing }

// Public returns the public halves.
func (k *PrivateKey) Public() PublicKey {
	return PublicKey{Signing: k.signing.Public().(ed25519.PublicKey), Sealing: k.sealing.PublicKey()}
}

// Sign signs msg with the Ed25519 key (pure Ed25519, no pre-hash).
func (k *PrivateKey) Sign(msg []byte) []byte { return ed25519.Sign(k.signing, msg) }

// Open opens an envelope sealed to this key's public sealing key with the
// given info and aad (see seal.Open). Failures wrap seal.ErrOpen.
func (k *PrivateKey) Open(envelope, info, aad []byte) ([]byte, error) {
	return seal.Open(k.sealing, envelope, info, aad)
}

// SigningString returns the policy form of the signing key:
// "ed25519:" followed by the 32-byte key in standard padded base64.
func (p PublicKey) SigningString() string { return FormatSigningKey(p.Signing) }

// SealingString returns the policy form of the sealing key: "hpke:"
// followed by standard padded base64 of seal.MarshalPublicKey (two-byte KEM
// id 0x647a, then the 1216-byte MLKEM768-X25519 public key).
func (p PublicKey) SealingString() string { return FormatSealingKey(p.Sealing) }

// FormatSigningKey returns the "ed25519:…" text form of pub
// (protocol.FormatEd25519Key).
func FormatSigningKey(pub ed25519.PublicKey) string { return protocol.FormatEd25519Key(pub) }

// FormatSealingKey returns the "hpke:…" text form of pub.
func FormatSealingKey(pub hpke.PublicKey) string {
	return SealingPrefix + base64.StdEncoding.EncodeToString(seal.MarshalPublicKey(pub))
}

// ParseSigningKey parses the "ed25519:…" form (protocol.ParseEd25519Key:
// only the canonical spelling, so that each key has exactly one and a
// policy's hash cannot vary with it) and refuses weak keys
// (CheckSigningKey).
func ParseSigningKey(s string) (ed25519.PublicKey, error) {
	pub, err := protocol.ParseEd25519Key(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if err := CheckSigningKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// CheckSigningKey refuses 32 bytes that are not the canonical encoding of
// an Ed25519 point of large order:
//
//   - not a point on the curve (no signature verifies; a typo or garbage);
//   - a non-canonical encoding (y not reduced modulo 2^255-19, or the sign
//     bit set for x = 0), so that each key has one spelling and a policy
//     one hash;
//   - a small-order point (the identity and the seven points of order 2, 4
//     or 8): with such a key, signatures can be made without any private
//     key, and one signature can verify for several messages, so it
//     identifies nobody (ErrWeakKey).
//
// Keys made by Generate, FromSeeds or any RFC 8032 key generation pass.
func CheckSigningKey(pub []byte) error {
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return fmt.Errorf("%w: Ed25519 public key is not a point on the curve", ErrFormat)
	}
	if !bytes.Equal(p.Bytes(), pub) {
		return fmt.Errorf("%w: Ed25519 public key is not in canonical form (a coordinate not reduced modulo 2^255-19, or a sign bit on zero); every key has exactly one encoding", ErrFormat)
	}
	if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return fmt.Errorf("%w: Ed25519 public key is a small-order point (the identity or a point of order 2, 4 or 8): signatures under it can be made without a private key, so it identifies nobody", ErrWeakKey)
	}
	return nil
}

// ParseSealingKey parses the "hpke:…" form.
func ParseSealingKey(s string) (hpke.PublicKey, error) {
	b, err := decodeKeyString(s, SealingPrefix, "HPKE public key")
	if err != nil {
		return nil, err
	}
	pub, err := seal.ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	return pub, nil
}

func decodeKeyString(s, prefix, what string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		shown := s
		if len(shown) > 16 {
			shown = shown[:16] + "…"
		}
		return nil, fmt.Errorf("%w: %s must start with %q, got %q", ErrFormat, what, prefix, shown)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not standard base64: %v", ErrFormat, what, err)
	}
	// The decoder skips CR and LF; refuse them so the encoding is unique.
	if base64.StdEncoding.EncodeToString(b) != rest {
		return nil, fmt.Errorf("%w: %s is not in canonical base64 (no line breaks or spaces allowed)", ErrFormat, what)
	}
	return b, nil
}

// Equal reports whether two public keys are the same.
func (p PublicKey) Equal(q PublicKey) bool {
	if !p.Signing.Equal(q.Signing) {
		return false
	}
	if p.Sealing == nil || q.Sealing == nil {
		return p.Sealing == nil && q.Sealing == nil
	}
	return bytes.Equal(seal.MarshalPublicKey(p.Sealing), seal.MarshalPublicKey(q.Sealing))
}
