package verify

import (
	"crypto/ed25519"
	"encoding/hex"
	"testing"
)

// edgePoints are encodings on which Ed25519 verifiers are known to
// disagree: the eight small-order points, their non-canonical encodings
// (y ≥ p) and sign-flipped forms, and encodings that are not points.
var edgePoints = []string{
	"0100000000000000000000000000000000000000000000000000000000000000",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"0000000000000000000000000000000000000000000000000000000000000080",
	"0000000000000000000000000000000000000000000000000000000000000000",
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
	"0100000000000000000000000000000000000000000000000000000000000080",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"0200000000000000000000000000000000000000000000000000000000000000",
}

// TestSignatureEdgeCasesMatchStandardLibrary: on every pair of edge
// points as key and R, with s = 0, 1 and L−1, the rule's outcome is
// crypto/ed25519's.
func TestSignatureEdgeCasesMatchStandardLibrary(t *testing.T) {
	t.Parallel()
	scalars := []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"ecd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010",
		"edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010",
	}
	for _, a := range edgePoints {
		for _, r := range edgePoints {
			for _, s := range scalars {
				for _, msg := range []string{"", "6869", "00"} {
					pub, m, sig := unhex(t, a), unhex(t, msg), unhex(t, r+s)
					if got, want := Signature(pub, m, sig), ed25519.Verify(pub, m, sig); got != want {
						t.Errorf("key %s R %s s %s msg %q: rule says %v, crypto/ed25519 says %v", a, r, s, msg, got, want)
					}
				}
			}
		}
	}
}

// FuzzSignatureMatchesStandardLibrary: the rule accepts exactly what
// crypto/ed25519 accepts. Seeds are valid signatures (so that mutations
// explore near-valid inputs), the vectors, and the edge points.
func FuzzSignatureMatchesStandardLibrary(f *testing.F) {
	for i := range 4 {
		k := seedKey(byte(i + 1))
		msg := []byte{byte(i), 'x'}
		f.Add([]byte(k.Public().(ed25519.PublicKey)), msg, ed25519.Sign(k, msg))
	}
	for _, a := range edgePoints {
		p, _ := hex.DecodeString(a)
		f.Add(p, []byte("hi"), append(append([]byte{}, p...), make([]byte, 32)...))
	}
	f.Fuzz(func(t *testing.T, pub, msg, sig []byte) {
		want := len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, msg, sig)
		if got := Signature(pub, msg, sig); got != want {
			t.Fatalf("key %x msg %x sig %x: rule says %v, crypto/ed25519 says %v", pub, msg, sig, got, want)
		}
	})
}
