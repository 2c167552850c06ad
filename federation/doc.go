// Package federation runs computations across organisations that move
// results, not data (seed 001; docs/federation.md).
//
// An organisation publishes a model on the ledger (package ledger/model):
// the SHA-256 of a program its nodes keep, the functions it exports with a
// JSON Schema for each one's parameters and result, the local datasets
// they read, its output rules and who may call it. Its node's Holder keeps
// the program and the datasets (they never leave it) and answers calls:
// it checks each one against the ledger (the model is published, live,
// served here; the function exists; the initiator is allowed) and the
// published schema, runs the program in one of the node's isolates on the
// local data, enforces the output rules on the result (at least min_rows
// rows aggregated, the result's schema), seals the result to the caller's
// one-time HPKE key, and records the call's receipt (model.called) on the
// ledger before releasing it — the ledger refuses a replayed call, a
// revoked model and a spent budget, so no result leaves without its
// receipt.
//
// An initiator's total model is an ordinary Cloister program that calls
// sub-models through the host call CallName (guest.Call): the Caller on
// the initiator's node resolves the model on the ledger, reaches a
// serving node over TLS pinned to the platform key the ledger lists for
// it, signs the exact call with its own platform key (bound to the
// holder's TLS certificate), checks the receipt and opens the result.
package federation
