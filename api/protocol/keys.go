package protocol

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"
)

// Ed25519KeyPrefix starts the text form of every Ed25519 public key
// Cloister writes: principals' signing keys in policies, nodes' platform
// keys, ledger submitters.
const Ed25519KeyPrefix = "ed25519:"

// FormatEd25519Key returns the text form of pub: Ed25519KeyPrefix, then the
// 32 bytes in standard padded base64.
func FormatEd25519Key(pub ed25519.PublicKey) string {
	return Ed25519KeyPrefix + base64.StdEncoding.EncodeToString(pub)
}

// ParseEd25519Key reads the text form FormatEd25519Key writes, and only
// that spelling (no line breaks, no unpadded or URL-safe base64, zero
// padding bits), so that a key has one text form and a document naming it
// one hash. It checks the form, not the point: keys.CheckSigningKey also
// refuses points off the curve and of small order.
func ParseEd25519Key(s string) (ed25519.PublicKey, error) {
	rest, ok := strings.CutPrefix(s, Ed25519KeyPrefix)
	if !ok {
		return nil, fmt.Errorf("Ed25519 public key %.40q must start with %q", s, Ed25519KeyPrefix)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(rest)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("Ed25519 public key %.40q: not standard base64 of %d bytes", s, ed25519.PublicKeySize)
	}
	// The decoder skips line breaks; the re-encoding has none.
	if base64.StdEncoding.EncodeToString(b) != rest {
		return nil, fmt.Errorf("Ed25519 public key %.40q: not in canonical base64 (no line breaks or spaces)", s)
	}
	return ed25519.PublicKey(b), nil
}
