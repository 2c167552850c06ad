// Package ledger holds the entry format of Cloister's verifiable log: typed
// entries in canonical JSON (RFC 8785 style), each signed by its submitter's
// Ed25519 key over a domain-separated encoding, and hashed as RFC 6962
// leaves. It is the base the CometBFT state machine, checkpoints and the
// verifying client are built on; it does not (yet) replicate or store
// anything itself.
package ledger
