package verify

import "crypto/ed25519"

// Signature is the ledger's one signature rule: Ed25519 as RFC 8032
// specifies it, verified one signature at a time, cofactorless, exactly as
// the Go standard library's crypto/ed25519 does (and browsers' WebCrypto,
// which also refuses a non-canonical s). Entries, vote extensions and
// checkpoint notes are all checked by it. Batch or cofactored verification
// is never used: it can accept signatures this rule refuses, and then two
// honest verifiers would disagree about the log.
func Signature(pub ed25519.PublicKey, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(pub, msg, sig)
}
