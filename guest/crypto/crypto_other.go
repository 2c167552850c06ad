//go:build !wasip1

package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/sha256"
	"hash"
)

// VerifyEd25519 reports whether sig is a valid Ed25519 signature of msg by
// pub (outside an isolate: the standard library's).
func VerifyEd25519(pub, msg, sig []byte) bool {
	return len(pub) == ed25519.PublicKeySize && ed25519.Verify(ed25519.PublicKey(pub), msg, sig)
}

// Sum256 returns the SHA-256 digest of data (outside an isolate: the
// standard library's).
func Sum256(data []byte) [32]byte { return sha256.Sum256(data) }

func gcm(key, nonce []byte) (cipher.AEAD, error) {
	if err := checkArgs(key, nonce); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// SealAESGCM encrypts and authenticates plaintext with AES-GCM and
// returns ciphertext‖tag (16 bytes longer).
func SealAESGCM(key, nonce, plaintext, ad []byte) ([]byte, error) {
	g, err := gcm(key, nonce)
	if err != nil {
		return nil, err
	}
	return g.Seal(nil, nonce, plaintext, ad), nil
}

// OpenAESGCM checks and decrypts ciphertext‖tag.
func OpenAESGCM(key, nonce, sealed, ad []byte) ([]byte, error) {
	g, err := gcm(key, nonce)
	if err != nil {
		return nil, err
	}
	out, err := g.Open(nil, nonce, sealed, ad)
	if err != nil {
		return nil, ErrOpen
	}
	return out, nil
}

// NewSHA256 returns a streaming SHA-256 (outside an isolate: the standard
// library's).
func NewSHA256() hash.Hash { return sha256.New() }

// NewAESGCM returns AES-GCM with a 16-, 24- or 32-byte key and 12-byte
// nonces (outside an isolate: the standard library's).
func NewAESGCM(key []byte) (cipher.AEAD, error) { return gcm(key, make([]byte, 12)) }
