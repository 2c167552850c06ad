// Package protocol holds the byte-exact pieces of the session protocol that
// a client and a node must compute identically: the attestation report data,
// the message a principal signs for each request, the HPKE info strings of
// sealed programs, inputs and outputs, the per-session TLS server name, and
// the deterministic seed of a run. The wire messages themselves are the
// protobuf types in api/cloister/v1.
//
// It has no state and does no I/O; it is not a client (see package client)
// nor a server (see package node). docs/decisions/0030-session-protocol.md
// explains each choice.
package protocol
