// Package layout has no code: its tests hold the module to its rules about
// where each thing lives, so that there stays one way to do each thing —
// one atomic file writer (internal/atomicfile), one size parser
// (internal/bytesize), one canonical JSON (jcs), one checkpoint verifier
// and quorum rule (ledger/verify), one text form of Ed25519 keys and one
// home for the protocol's byte strings (api/protocol), no server package
// importing a client package, and tests that need nothing outside the
// repository.
package layout
