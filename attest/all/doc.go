// Package all registers every attestation verifier in the attest registry.
// Import it for its side effect where any class of evidence may arrive (the
// CLI, the node, the key broker):
//
//	import _ "github.com/cloisterhq/cloister/attest/all"
//
// It is not for code that should accept only some classes: import those
// class packages directly instead. Add one blank import per class package.
package all
