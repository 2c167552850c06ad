package ledger

import (
	"crypto/ed25519"
	"encoding/hex"
	"testing"
)

// FuzzVerifyMatchesStdlib checks that the ledger's verifier accepts
// exactly what crypto/ed25519 accepts.
func FuzzVerifyMatchesStdlib(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	msg := []byte("cloister ledger entry")
	sig := ed25519.Sign(priv, msg)
	f.Add([]byte(pub), msg, sig)
	// Small-order and non-canonical points as keys and R values.
	for _, h := range []string{
		"0100000000000000000000000000000000000000000000000000000000000000", // identity
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2
		"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p+1, non-canonical
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", // y = p, x sign set
	} {
		p, _ := hex.DecodeString(h)
		f.Add(p, msg, sig)
		f.Add([]byte(pub), msg, append(append([]byte{}, p...), sig[32:]...))
		f.Add(p, msg, append(append([]byte{}, p...), make([]byte, 32)...))
	}
	// S >= L.
	bad := append([]byte{}, sig...)
	copy(bad[32:], []byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10})
	f.Add([]byte(pub), msg, bad)
	f.Fuzz(func(t *testing.T, pub, msg, sig []byte) {
		if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
			if verifyEd25519(pub, msg, sig) {
				t.Fatal("accepted a key or signature of the wrong size")
			}
			return
		}
		if got, want := verifyEd25519(pub, msg, sig), ed25519.Verify(pub, msg, sig); got != want {
			t.Fatalf("verify(%x, %x, %x) = %v, crypto/ed25519 says %v", pub, msg, sig, got, want)
		}
	})
}
