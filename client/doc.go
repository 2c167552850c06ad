// Package client is the Go SDK for Cloister sessions: create a session on
// a node, attest it, provision programs and inputs, wait, fetch results and
// close it.
//
// Attestation is not optional. Every operation that sends a program, an
// input or a signed request is a method of *AttestedSession, and the only
// way to get one is Client.Attest, which verifies fresh evidence against the
// caller's own copy of the policy: evidence signature and reference values
// from the policy's isolate entry, report data binding the policy hash, the
// TLS key seen in the handshake, the session's HPKE key and the caller's
// nonce. The session's TLS key is then pinned for every later call on that
// AttestedSession.
//
// It is not a node (package node) and keeps no state on disk: principal
// keys come from package keys, policies from package policy.
package client
