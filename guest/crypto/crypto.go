// Package crypto gives guest programs SHA-256, AES-GCM and Ed25519
// signature verification computed by the host: inside a Cloister isolate the work runs natively, with the CPU's
// SHA and AES instructions (the isolate's host-primitive module
// cloister_accel_v1), many times faster than the same code compiled to
// WebAssembly; elsewhere (tests, native builds) it is the standard
// library's. Results are the same bytes either way.
//
// A program that imports this package runs only in a runtime that offers
// cloister_accel_v1 (every Cloister engine does; other WASI runtimes
// refuse to instantiate it).
package crypto

import "errors"

// ErrOpen is returned by OpenAESGCM when the ciphertext or its
// associated data is not authentic.
var ErrOpen = errors.New("guest/crypto: message authentication failed")

// errArgs: a key or nonce of the wrong size.
var errArgs = errors.New("guest/crypto: AES-GCM takes a 16-, 24- or 32-byte key and a 12-byte nonce")

func checkArgs(key, nonce []byte) error {
	switch len(key) {
	case 16, 24, 32:
	default:
		return errArgs
	}
	if len(nonce) != 12 {
		return errArgs
	}
	return nil
}
