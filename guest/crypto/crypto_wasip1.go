//go:build wasip1

package crypto

import "unsafe"

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
