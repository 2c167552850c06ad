// Package policy reads, checks and hashes Cloister policies: the JSON
// contract of one delegated computation, naming its principals and their
// roles, the programs with their hashes, the inputs and who provides them,
// the outputs and who may read them, the isolate classes and what each must
// prove, the resource limits and the expiry (docs/policy.md).
//
// Parse is strict: unknown or misspelt fields, duplicate keys, wrong types
// and trailing data are refused, and every problem is reported at once with
// its field path, so a policy author fixes a file in one pass. The hash every
// attestation binds is SHA-256 over the RFC 8785 canonical form of the
// document (package jcs), so whitespace, key order and escaping never change
// it and any change of meaning does.
//
// Enforcing a policy (who may upload what, when a session runs) is the
// node's job; this package answers the questions the node asks (Principal,
// ProgramProvider, OutputReaders, ReferenceValues…) but holds no state.
package policy
