package keys

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"filippo.io/edwards25519"

	"github.com/cloisterhq/cloister/api/protocol"
)

// smallOrderPoints are the canonical encodings of the eight points of
// order 1, 2, 4 and 8 of edwards25519 (the identity, (0,-1), the two of
// order 4 and the four of order 8).
var smallOrderPoints = []string{
	"0100000000000000000000000000000000000000000000000000000000000000",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"0000000000000000000000000000000000000000000000000000000000000000",
	"0000000000000000000000000000000000000000000000000000000000000080",
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
}

// smallOrderKeyStrings returns the eight small-order points in the
// "ed25519:…" form.
func smallOrderKeyStrings(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, h := range smallOrderPoints {
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, protocol.Ed25519KeyPrefix+base64.StdEncoding.EncodeToString(b))
	}
	return out
}

// The list above is what it claims: eight distinct points, each of which
// the cofactor maps to the identity.
func TestSmallOrderPointList(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, h := range smallOrderPoints {
		b, _ := hex.DecodeString(h)
		p, err := new(edwards25519.Point).SetBytes(b)
		if err != nil {
			t.Fatalf("%s: %v", h, err)
		}
		if hex.EncodeToString(p.Bytes()) != h {
			t.Fatalf("%s is not canonical", h)
		}
		if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) != 1 {
			t.Fatalf("%s is not of small order", h)
		}
		seen[h] = true
	}
	if len(seen) != 8 {
		t.Fatalf("%d distinct points, want 8", len(seen))
	}
}

func TestParseSigningKeyRefusesSmallOrder(t *testing.T) {
	t.Parallel()
	for i, s := range smallOrderKeyStrings(t) {
		_, err := ParseSigningKey(s)
		if !errors.Is(err, ErrWeakKey) || !strings.Contains(err.Error(), "small-order") {
			t.Errorf("point %d (%s): err = %v, want ErrWeakKey naming a small-order point", i, smallOrderPoints[i], err)
		}
	}
}

// Why they are refused: under the identity key, one signature that no
// one made verifies for every message.
func TestIdentityKeyVerifiesAnything(t *testing.T) {
	t.Parallel()
	id, _ := hex.DecodeString(smallOrderPoints[0])
	sig := make([]byte, 64)
	copy(sig, id) // R = identity, S = 0
	for _, msg := range []string{"upload program", "close session"} {
		if !ed25519.Verify(ed25519.PublicKey(id), []byte(msg), sig) {
			t.Fatalf("crypto/ed25519 no longer verifies (R=identity, S=0) under the identity key for %q; update this test, the parse check stays", msg)
		}
	}
}

func TestParseSigningKeyRefusesNonCanonical(t *testing.T) {
	t.Parallel()
	p := func(h string) string {
		b, _ := hex.DecodeString(h)
		return protocol.Ed25519KeyPrefix + base64.StdEncoding.EncodeToString(b)
	}
	cases := map[string]string{
		// y = p (that is, 0) and y = p+1 (1): unreduced coordinates.
		"y = p":     "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"y = p + 1": "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		// x = 0 with its sign bit set: the identity and (0,-1) again.
		"identity, negative zero": "0100000000000000000000000000000000000000000000000000000000000080",
		"(0,-1), negative zero":   "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	}
	for name, h := range cases {
		_, err := ParseSigningKey(p(h))
		if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "canonical") {
			t.Errorf("%s: err = %v, want a non-canonical encoding error", name, err)
		}
	}
	// y = 2 is not on the curve.
	_, err := ParseSigningKey(p("0200000000000000000000000000000000000000000000000000000000000000"))
	if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "not a point on the curve") {
		t.Errorf("off-curve key: err = %v", err)
	}
}

// Generated keys, and a large sample of derived ones, always pass.
func TestGeneratedKeysPass(t *testing.T) {
	t.Parallel()
	for i := range 200 {
		seed := make([]byte, 32)
		seed[0], seed[1] = byte(i), byte(i>>8)
		pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
		if _, err := ParseSigningKey(FormatSigningKey(pub)); err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
	}
}
