//go:build wasip1

package crypto

import (
	"crypto/cipher"
	"hash"
	"unsafe"
)

//go:wasmimport cloister_accel_v1 sha256
//go:noescape
func hostSHA256(data unsafe.Pointer, n uint32, out unsafe.Pointer) uint32

//go:wasmimport cloister_accel_v1 aes_gcm_seal
//go:noescape
func hostSeal(key unsafe.Pointer, keyLen uint32, nonce unsafe.Pointer, in unsafe.Pointer, inLen uint32, ad unsafe.Pointer, adLen uint32, out unsafe.Pointer) uint32

//go:wasmimport cloister_accel_v1 aes_gcm_open
//go:noescape
func hostOpen(key unsafe.Pointer, keyLen uint32, nonce unsafe.Pointer, in unsafe.Pointer, inLen uint32, ad unsafe.Pointer, adLen uint32, out unsafe.Pointer) uint32

//go:wasmimport cloister_accel_v1 ed25519_verify
//go:noescape
func hostVerify(pub unsafe.Pointer, msg unsafe.Pointer, msgLen uint32, sig unsafe.Pointer) uint32

// VerifyEd25519 reports whether sig is a valid Ed25519 signature of msg by
// pub (the standard library's rules), checked by the host.
func VerifyEd25519(pub, msg, sig []byte) bool {
	if len(pub) != 32 || len(sig) != 64 {
		return false
	}
	return hostVerify(ptr(pub), ptr(msg), uint32(len(msg)), ptr(sig)) == 0
}

func ptr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

// Sum256 returns the SHA-256 digest of data, computed by the host.
func Sum256(data []byte) [32]byte {
	var sum [32]byte
	if hostSHA256(ptr(data), uint32(len(data)), unsafe.Pointer(&sum)) != 0 {
		panic("guest/crypto: the host refused sha256")
	}
	return sum
}

// SealAESGCM encrypts and authenticates plaintext with AES-GCM and
// returns ciphertext‖tag (16 bytes longer).
func SealAESGCM(key, nonce, plaintext, ad []byte) ([]byte, error) {
	if err := checkArgs(key, nonce); err != nil {
		return nil, err
	}
	out := make([]byte, len(plaintext)+16)
	if hostSeal(ptr(key), uint32(len(key)), ptr(nonce), ptr(plaintext), uint32(len(plaintext)), ptr(ad), uint32(len(ad)), ptr(out)) != 0 {
		return nil, errArgs
	}
	return out, nil
}

// OpenAESGCM checks and decrypts ciphertext‖tag.
func OpenAESGCM(key, nonce, sealed, ad []byte) ([]byte, error) {
	if err := checkArgs(key, nonce); err != nil {
		return nil, err
	}
	if len(sealed) < 16 {
		return nil, ErrOpen
	}
	out := make([]byte, len(sealed)-16)
	switch hostOpen(ptr(key), uint32(len(key)), ptr(nonce), ptr(sealed), uint32(len(sealed)), ptr(ad), uint32(len(ad)), ptr(out)) {
	case 0:
		return out, nil
	case 2:
		return nil, ErrOpen
	}
	return nil, errArgs
}

//go:wasmimport cloister_accel_v1 sha256_init
//go:noescape
func hostSHA256Init(state unsafe.Pointer) uint32

//go:wasmimport cloister_accel_v1 sha256_update
//go:noescape
func hostSHA256Update(state unsafe.Pointer, data unsafe.Pointer, n uint32) uint32

//go:wasmimport cloister_accel_v1 sha256_final
//go:noescape
func hostSHA256Final(state unsafe.Pointer, out unsafe.Pointer) uint32

// hostHash is a streaming SHA-256 whose state (opaque, written by the
// host) the host advances over each Write.
type hostHash struct{ state [128]byte }

// NewSHA256 returns a streaming SHA-256 computed by the host: data is
// hashed as it is written, never gathered in one buffer.
func NewSHA256() hash.Hash {
	h := new(hostHash)
	h.Reset()
	return h
}

func (h *hostHash) Size() int      { return 32 }
func (h *hostHash) BlockSize() int { return 64 }

// Reset starts over.
func (h *hostHash) Reset() {
	if hostSHA256Init(unsafe.Pointer(&h.state)) != 0 {
		panic("guest/crypto: the host refused sha256_init")
	}
}

// Write hashes p; it never fails.
func (h *hostHash) Write(p []byte) (int, error) {
	if hostSHA256Update(unsafe.Pointer(&h.state), ptr(p), uint32(len(p))) != 0 {
		panic("guest/crypto: the host refused sha256_update")
	}
	return len(p), nil
}

// Sum appends the digest of what was written to b; the hash goes on.
func (h *hostHash) Sum(b []byte) []byte {
	var sum [32]byte
	if hostSHA256Final(unsafe.Pointer(&h.state), unsafe.Pointer(&sum)) != 0 {
		panic("guest/crypto: the host refused sha256_final")
	}
	return append(b, sum[:]...)
}

// hostGCM is AES-GCM computed by the host.
type hostGCM struct{ key []byte }

// NewAESGCM returns AES-GCM with a 16-, 24- or 32-byte key and 12-byte
// nonces, computed by the host. Seal and Open work in place
// (plaintext[:0] or ciphertext[:0] as dst) or into a buffer of their own
// without a copy of the message.
func NewAESGCM(key []byte) (cipher.AEAD, error) {
	if err := checkArgs(key, make([]byte, 12)); err != nil {
		return nil, err
	}
	return &hostGCM{key: append([]byte(nil), key...)}, nil
}

func (g *hostGCM) NonceSize() int { return 12 }
func (g *hostGCM) Overhead() int  { return 16 }

// Seal appends the encryption and tag of plaintext to dst.
func (g *hostGCM) Seal(dst, nonce, plaintext, ad []byte) []byte {
	if len(nonce) != 12 {
		panic("guest/crypto: incorrect nonce length given to GCM")
	}
	ret, out := grow(dst, len(plaintext)+16)
	if hostSeal(ptr(g.key), uint32(len(g.key)), ptr(nonce), ptr(plaintext), uint32(len(plaintext)), ptr(ad), uint32(len(ad)), ptr(out)) != 0 {
		panic("guest/crypto: the host refused aes_gcm_seal")
	}
	return ret
}

// Open appends the decryption of ciphertext‖tag to dst, or returns
// ErrOpen.
func (g *hostGCM) Open(dst, nonce, ciphertext, ad []byte) ([]byte, error) {
	if len(nonce) != 12 {
		panic("guest/crypto: incorrect nonce length given to GCM")
	}
	if len(ciphertext) < 16 {
		return nil, ErrOpen
	}
	ret, out := grow(dst, len(ciphertext)-16)
	switch hostOpen(ptr(g.key), uint32(len(g.key)), ptr(nonce), ptr(ciphertext), uint32(len(ciphertext)), ptr(ad), uint32(len(ad)), ptr(out)) {
	case 0:
		return ret, nil
	case 2:
		return nil, ErrOpen
	}
	panic("guest/crypto: the host refused aes_gcm_open")
}

// grow extends b by n bytes (reusing its capacity, as cipher.AEAD does)
// and returns the whole and the new part.
func grow(b []byte, n int) (whole, tail []byte) {
	if total := len(b) + n; cap(b) >= total {
		whole = b[:total]
	} else {
		whole = make([]byte, total)
		copy(whole, b)
	}
	return whole, whole[len(b):]
}
