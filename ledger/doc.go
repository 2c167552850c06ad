// Package ledger is Cloister's verifiable log: typed entries in canonical
// JSON (RFC 8785 style), each signed by its submitter's Ed25519 key over a
// domain-separated encoding and hashed as an RFC 6962 leaf; a CometBFT
// application that judges them (signature, authority per kind, references,
// replay, time) and keeps them in a bbolt Merkle log whose root is the app
// hash; checkpoints cosigned by the validators through vote extensions
// (C2SP signed notes, docs/decisions/0040-ledger-checkpoints.md); and the
// HTTP API that serves entries, checkpoints and proofs.
//
// Run it as one validator inside a program (OpenEmbedded) or as a
// multi-validator chain (GenerateTestnet, then StartValidator per home).
// It is not a client: ledger/client talks to the API and verifies what it
// is told, trusting no server.
package ledger
