// Package receipt is the format of a session receipt and its one verifier.
//
// A receipt is what a principal, an auditor or anyone else needs to check,
// offline and by themselves, what a Cloister node did for one session: the
// policy every principal agreed to (its canonical text, so its hash can be
// recomputed), the session's RA-TLS certificate and HPKE public key, the
// evidence inside that certificate, and the session's ledger entries —
// the node's registration, session.created, each upload, result.committed,
// each fetch and the close — each with its RFC 6962 inclusion proof to one
// checkpoint cosigned by the ledger's validators.
//
// Verify checks all of it against a trust root the verifier brings (a
// ledger state file: the pinned validator set and a checkpoint); without
// one it checks the receipt against the validator set the receipt itself
// carries, and says that this proves only that the receipt is consistent,
// not which ledger it comes from. The chain of checks: the checkpoint is
// cosigned by more than two thirds of the pinned set; every entry is in
// its canonical form, signed by its submitter and included in the
// checkpoint; the session's entries are signed by the node's platform key,
// which registered on the ledger; the policy hashes to the hash every
// entry names; the evidence is the one session.created committed to, it
// verifies under the policy's isolate entry and binds the certificate's
// key, the policy hash and the HPKE key; each upload carries its
// principal's signature under the key the policy lists; and the result
// commitment is signed by the attested session key.
//
// Build assembles a receipt from a node's public material and a ledger.
// The console (package console) serves receipts, and its browser verifier
// (console/static/verify.js) repeats the checks that can run in a browser;
// `cloister receipt verify` runs this package's. It is not a ledger client
// (ledger/client) and does not talk to a node.
package receipt
