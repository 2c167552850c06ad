// Package verify is what a party needs to check a Cloister ledger by
// itself, and nothing more: the entry format and its one canonical form,
// the signature rule, checkpoints and their validator quorum, and
// inclusion and consistency proofs. It is shaped like x/mod's sumdb/tlog
// and sumdb/note, on which it builds, and imports no consensus engine: a
// sceptic who only checks proofs links the standard library, x/mod and the
// project's canonical JSON (jcs), not CometBFT (a test holds it to that).
//
// The state machine (package ledger), the HTTP client (ledger/client) and
// the command line all use it, so that what the validators accept and what
// a client checks are the same code. Its testdata/ holds known-answer
// vectors for other implementations (a browser verifier, say): entries
// that must decode with their leaf hashes, entries that must be refused,
// and a cosigned checkpoint.
//
// The rules, in one place:
//
//   - An entry is the canonical JSON (RFC 8785, package jcs) of
//     {"entry":{"body":{…},"kind":…,"nonce":…,"submitter":"ed25519:…",
//     "time":…},"sig":"<base64>"}, byte for byte; any other spelling of the
//     same content is refused, so an entry has one transaction and one
//     leaf hash (RFC 6962: SHA-256(0x00 ‖ tx)).
//   - The submitter signs entrySigningDomain ‖ canonical(entry) with
//     Ed25519, verified cofactorless by the standard library (as browsers'
//     WebCrypto does); never batch or cofactored verification, which can
//     accept what another verifier refuses.
//   - Or (ledger rule version 18) the entry is batch-signed: it also
//     carries "batch":{"count","index","path"}, its place in an RFC 6962
//     tree whose leaves are its batch's signed texts, and the one
//     signature, by the same rule, is over batchSigningDomain ‖
//     be64(count) ‖ root (batch.go, SignBatch).
//   - A checkpoint is a C2SP tlog-checkpoint in a signed note; it is
//     trusted when validators holding more than two thirds of the voting
//     power signed it (Quorum). Signatures by keys outside the set are
//     ignored (witnesses may cosign); a bad signature by a member refuses
//     the checkpoint.
//
// It does not talk to a ledger (ledger/client does) and does not decide
// what the state machine accepts beyond the entry's form and signature:
// authority, references and replay are the ledger's versioned rules.
package verify
