// Package software implements the "software" attestation class: the node's
// Ed25519 platform key signs a statement binding the runtime measurement
// (SHA-256 of the running cloister binary), the caller's 64-byte report data
// and the time.
//
// It is for deployments without a TEE or TPM, and for development: it lets a
// relying party check which node key vouches for an isolate and which
// runtime build it claims to run. It is NOT a defence against the node
// operator, who holds the platform key, can sign any statement and can read
// and alter the isolate's memory. Claims from this class always say
// HardwareProtected: false and carry a warning saying so.
//
// The statement encoding (version 1) is described in statement.go and in
// docs/attestation.md.
package software
