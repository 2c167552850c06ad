// Package session benchmarks the whole delegated-computation flow of
// package node over loopback TLS — create, attest, upload a program and two
// inputs, run, fetch the sealed result — against running the same program
// directly on the isolate runtime, so that the difference is the protocol's
// cost. SessionThroughputClientsApart runs the clients in a process of
// their own, so that what serving a session costs is measured apart from
// the clients' work (decision 0031). Figures and the command that produced
// them: docs/performance-sessions.md.
package session
