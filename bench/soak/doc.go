// Package soak runs a node for minutes under honest load and hostile
// traffic at once: honest clients create, provision, run, fetch and close
// sessions at a steady rate while hostile connections hammer the same
// node with oversized, compressed, slow and unauthenticated requests. It
// reports the sessions per second served, their latency, the node's
// resident memory over time, every error, and how each hostile request
// ended (each must be refused, for the right reason).
//
// It is a benchmark, not a test: it runs only when asked, for as long as
// asked. Figures and the command that produced them are in
// docs/performance.md.
package soak
