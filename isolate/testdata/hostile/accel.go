package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"

	"github.com/cloisterhq/cloister/guest/crypto"
)

// accel checks the host primitives (package guest/crypto) against the
// standard library compiled into this module, on random inputs of random
// sizes: every digest, ciphertext and opened plaintext must be the same
// bytes, and tampered messages must fail to open.
func accel() {
	rng := rand.New(rand.NewChaCha8([32]byte{'a', 'c', 'c', 'e', 'l'}))
	fill := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	fail := func(format string, args ...any) {
		fmt.Printf("MISMATCH: "+format+"\n", args...)
		os.Exit(1)
	}
	const rounds = 300
	for i := 0; i < rounds; i++ {
		n := rng.IntN(1 << (1 + rng.IntN(17)))
		data := fill(n)
		if crypto.Sum256(data) != sha256.Sum256(data) {
			fail("sha256 of %d bytes", n)
		}
		key := fill([]int{16, 24, 32}[rng.IntN(3)])
		nonce, ad := fill(12), fill(rng.IntN(64))
		block, _ := aes.NewCipher(key)
		gcm, _ := cipher.NewGCM(block)
		want := gcm.Seal(nil, nonce, data, ad)
		got, err := crypto.SealAESGCM(key, nonce, data, ad)
		if err != nil || !bytes.Equal(got, want) {
			fail("seal of %d bytes with a %d-byte key: %v", n, len(key), err)
		}
		plain, err := crypto.OpenAESGCM(key, nonce, want, ad)
		if err != nil || !bytes.Equal(plain, data) {
			fail("open of %d bytes: %v", n, err)
		}
		want[rng.IntN(len(want))] ^= 1 << rng.IntN(8)
		if _, err := crypto.OpenAESGCM(key, nonce, want, ad); err != crypto.ErrOpen {
			fail("tampered message opened: %v", err)
		}
	}
	if _, err := crypto.SealAESGCM(fill(7), fill(12), nil, nil); err == nil {
		fail("a 7-byte key was accepted")
	}
	fmt.Printf("agree: %d rounds\n", rounds)
}
