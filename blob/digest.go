package blob

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/cloisterhq/cloister/blob/addr"
)

// Digest names a blob: "sha256:" and 64 lowercase hex digits of the
// SHA-256 of its bytes. Other algorithms are refused.
type Digest string

// ErrDigest marks a string that is not a digest.
var ErrDigest = addr.ErrDigest

// ParseDigest checks that s is "sha256:" and 64 lowercase hex digits.
func ParseDigest(s string) (Digest, error) {
	if err := addr.ParseDigest(s); err != nil {
		return "", err
	}
	return Digest(s), nil
}

// FromBytes returns the digest of b.
func FromBytes(b []byte) Digest {
	s := sha256.Sum256(b)
	return FromSum(s)
}

// FromSum returns the digest with SHA-256 sum.
func FromSum(sum [32]byte) Digest { return Digest("sha256:" + hex.EncodeToString(sum[:])) }

// Hex returns the 64 hex digits.
func (d Digest) Hex() string { return strings.TrimPrefix(string(d), "sha256:") }

// Sum returns the SHA-256 the digest names.
func (d Digest) Sum() [32]byte {
	var s [32]byte
	hex.Decode(s[:], []byte(d.Hex()))
	return s
}

// Tag is the tag a pushed blob's manifest gets: "sha256-<hex>".
func (d Digest) Tag() string { return "sha256-" + d.Hex() }

func (d Digest) String() string { return string(d) }

func truncate(s string) string { return addr.Truncate(s) }
