// Package ledgerbench measures the ledger (package ledger and its HTTP
// client, package ledger/client) as it runs: real CometBFT, real bbolt,
// every entry's Ed25519 signature checked. It measures entries committed
// per second (one embedded validator; four validators on loopback, in this
// process and as four processes), commit latency idle and under load,
// inclusion and consistency proofs (server side and client side, beside
// x/mod/sumdb/tlog and transparency-dev/merkle verifying the same proofs),
// checkpoint cosignature checks, and bytes on disk per entry.
//
// Everything here is a benchmark (go test -bench); the one test is a
// quick smoke test of the fixtures. Figures and the commands that produced
// them: docs/performance.md, section "Ledger".
package ledgerbench
