// Package soak runs a node for minutes under honest load and hostile
// traffic at once: honest clients create, provision, run, fetch and close
// sessions at a steady rate while hostile connections hammer the same
// node with oversized, compressed, slow and unauthenticated requests. It
// reports the sessions per second served, their latency, the node's
// resident memory over time, every error, and how each hostile request
// ended (each must be refused, for the right reason).
//
// By default the node records on its embedded ledger, in its own process;
// -soak.ledger validator runs a one-validator ledger as a process of its
// own instead (a consortium's node records on validators elsewhere), and
// reports the two processes' memory apart.
//
// It is a benchmark, not a test: it runs only when asked, for as long as
// asked. Figures and the command that produced them are in
// docs/performance.md.
package soak
