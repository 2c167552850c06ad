// Package attest is Cloister's model of remote attestation, shaped after
// RATS (RFC 9334): an Attester produces Evidence over caller-chosen report
// data; a Verifier for the evidence's class parses it and checks its
// signatures and certificate chains (as of an injectable time), producing
// Claims; Validate then judges those Claims against ReferenceValues
// (measurement allow-list, minimum TCB, debug, report data, nonce, age).
//
// Parsing, verifying and judging are separate steps, as in go-sev-guest:
// per-class sub-packages (software, tpm, sevsnp, tdx, sgx, nitro, cca,
// ratls, ear) do the first two and register their verifiers here; import
// attest/all to register every one. Validate in this package does the
// third, the same way for every class. Detect and DecodeInput recognise an
// evidence file's class from its framing; ParseTrustAnchors reads roots and
// pinned keys (PEM, DER, JWK, "ed25519:<base64>"). Vendor roots are
// embedded in attest/roots.
//
// This package is not a policy engine and does not fetch collateral from the
// network: everything a verifier needs is passed in Evidence.Collateral or
// VerifyOptions. docs/attestation.md says what each class proves.
package attest
