// Package cca verifies Arm Confidential Compute Architecture (CCA)
// attestation tokens: a CBOR collection (tag 907, or the older tag 399)
// holding a platform token (COSE_Sign1 by the CCA platform attestation
// key, chained by the manufacturer) and a realm token (COSE_Sign1 by the
// Realm Attestation Key, RAK). The platform token's challenge is the hash of
// the RAK public key, which binds the realm to the platform.
//
// Verification needs the platform's public key pinned in
// VerifyOptions.TrustedKeys (Arm's CCA endorsement infrastructure is not
// built in). Tokens signed with the public Arm CCA test key are accepted
// with a warning and without the hardware-protected flag: they prove
// nothing about a real device. Cloister has no CCA attester.
package cca
