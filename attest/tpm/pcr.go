package tpm

import "crypto/sha256"

// extendFromZero is the SHA-256 PCR value after one extend of m into a
// reset PCR: SHA-256(0^32 || m).
func extendFromZero(m []byte) []byte {
	h := sha256.New()
	h.Write(make([]byte, sha256.Size))
	h.Write(m)
	return h.Sum(nil)
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
