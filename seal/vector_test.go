package seal

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"testing/cryptotest"
)

// The test vector of docs/keys.md: recipient seed 00 01 .. 1f, encryption
// randomness from testing/cryptotest.SetGlobalRandom(t, 1). The full
// envelope is in testdata/vector1.hex; other implementations check that they
// open it to the same plaintext.
const (
	vectorPlaintext = "hello, cloister"
	vectorInfo      = "cloister/v1/example"
	vectorAAD       = "session 0"
)

func vectorKey(t testing.TB) []byte {
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(i)
	}
	return seed
}

func TestVector(t *testing.T) {
	k, err := KEM().NewPrivateKey(vectorKey(t))
	if err != nil {
		t.Fatal(err)
	}
	cryptotest.SetGlobalRandom(t, 1)
	got, err := Seal(k.PublicKey(), []byte(vectorPlaintext), []byte(vectorInfo), []byte(vectorAAD))
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("CLOISTER_UPDATE_VECTORS") == "1" {
		if err := os.WriteFile("testdata/vector1.hex", []byte(hex.EncodeToString(got)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile("testdata/vector1.hex")
	if err != nil {
		t.Fatal(err)
	}
	want, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := Open(k, want, []byte(vectorInfo), []byte(vectorAAD))
	if err != nil {
		t.Fatalf("opening the stored vector: %v", err)
	}
	if string(pt) != vectorPlaintext {
		t.Fatalf("vector opened to %q", pt)
	}

	if !bytes.Equal(got, want) {
		t.Fatalf("deterministic seal differs from testdata/vector1.hex (sha256 %x)", sha256.Sum256(got))
	}
	t.Logf("vector sha256 %x, recipient public key sha256 %x", sha256.Sum256(got), sha256.Sum256(MarshalPublicKey(k.PublicKey())))
}
