package protocol

import (
	"crypto/ed25519"
	"crypto/sha512"
)

// RegistrationDomain separates the report data of a node's registration
// evidence from every other use of its attester.
const RegistrationDomain = "cloister/node-registration/v1\n"

// RegistrationReportData is the report data of the evidence a node puts in
// its node.registered ledger entry: SHA-512(RegistrationDomain ‖ Ed25519
// platform public key). A verifier recomputes it from the entry's
// platform_key, so the evidence vouches for that key.
func RegistrationReportData(platform ed25519.PublicKey) [64]byte {
	h := sha512.New()
	h.Write([]byte(RegistrationDomain))
	h.Write(platform)
	var rd [64]byte
	copy(rd[:], h.Sum(nil))
	return rd
}
