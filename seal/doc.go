// Package seal encrypts a message to one recipient's HPKE public key (RFC
// 9180) in a self-describing envelope: a short header naming the cipher
// suite, the HPKE encapsulated key, and the AEAD ciphertext. Inputs a data
// provider sends to a session, outputs a session returns to a result reader,
// and state a node keeps at rest all travel in these envelopes.
//
// The suite is MLKEM768-X25519 (X-Wing: post-quantum and classical key
// agreement together), HKDF-SHA256 and AES-256-GCM. The header carries the
// three HPKE identifiers so that a later suite can be added without breaking
// stored envelopes; today Open accepts exactly this one suite.
//
// Seal is single-shot and holds the whole message in memory: it is for
// inputs and outputs bounded by a policy's limits, not for streaming
// gigabytes. It does not sign: an envelope proves nothing about who sealed
// it. Callers that need the sender's identity sign separately (principal
// Ed25519 keys, see package keys).
//
// The envelope format is specified, with a test vector, in docs/keys.md.
package seal
