// Package client talks to a Cloister ledger over its HTTP API and checks
// what the ledger says instead of believing it.
//
// Client appends signed entries (it implements ledger.Appender) and reads
// entries, checkpoints, proofs, the validator set and status. Every response
// is bounded in size and checked for shape before it is returned: hashes are
// 32 bytes, counts and indexes are in range, an entry's bytes are canonical
// and hash to the leaf hash the server reports.
//
// Verify is the part a sceptical party relies on. It checks, itself, with
// package ledger/verify (the ledger's own verifier, built on
// golang.org/x/mod/sumdb/tlog and golang.org/x/mod/sumdb/note), that the
// latest checkpoint is cosigned by validators holding more than two thirds
// of the voting power, that the log it describes extends the one trusted
// before (a consistency proof), and optionally that one entry is in it (an
// inclusion proof) and is signed by its submitter. What it trusted is kept
// in a state file: the validator set, pinned on first use, and the last
// checkpoint. A server that shows a rewound or forked log, a different
// validator set or another ledger's origin fails verification with an
// error that says which check failed.
//
// It is not a ledger and does not import one: the state machine, store and
// validators are in package ledger, and a program that only checks links
// no consensus engine. Errors of the checks are *verify.VerificationError
// (errors.Is against verify.ErrQuorum, verify.ErrRewound, …); refusals are
// *verify.RejectedError.
package client
