// Package ledger is Cloister's verifiable log as its validators run it: a
// CometBFT application that judges entries (form and signature by package
// verify; authority per kind, references, replay and time by versioned
// rules, rules.go) and keeps them in a bbolt Merkle log whose root is the
// app hash; checkpoints cosigned by the validators through vote extensions
// (C2SP signed notes, docs/decisions/0040-ledger-checkpoints.md); and the
// HTTP API that serves entries, checkpoints and proofs.
//
// Run it as one validator inside a program (OpenEmbedded) or as a
// multi-validator chain (GenerateTestnet, then StartValidator per home).
// It is not a client, nor what a client checks with: ledger/client talks
// to the API, and ledger/verify — which links no consensus engine — holds
// the entry format, the signature rule and the checks of checkpoints and
// proofs that the state machine itself uses.
package ledger
