// Package node is the cloister node: one TLS port serving the ConnectRPC API
// of api/cloister/v1 for every delegated-computation session it hosts
// (ARCHITECTURE.md, protocols 1 and 2).
//
// A session is split in two. The session core (core.go) is the isolate
// side: it generates and holds the session's TLS and HPKE keys, produces
// evidence binding them to the policy hash and a client's nonce, opens
// sealed programs and inputs only to check them and to feed the isolate,
// and seals outputs to their readers. The API side (handlers.go,
// session.go) enforces the policy's rules on signed requests and stores
// envelopes it cannot read. State is kept sealed at rest under DATA/sessions
// (store.go) so that a restart loses no finished result.
//
// It is not a client (package client), not a ledger (a node only records
// events through the EventLog seam) and not a scheduler: a session runs one
// program once, on this node.
package node
