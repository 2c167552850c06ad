// Package httpguard bounds what a client can take from an HTTP listener
// before any handler sees its request: how many connections it holds (in
// total and per address), how long it may take to send headers and body
// (a body must keep arriving at a minimum rate, so a client trickling one
// byte every few seconds is cut off), how long a response may take, how
// large headers are, and how many HTTP/2 streams one connection multiplexes.
//
// Every listener the project opens — the node's API, the ledger's HTTP
// API, and the services that come after them — is served through
// NewServer and Listen with a Limits value, so that these bounds are one
// piece of code with one set of defaults. What a request may contain (its
// size, before and after decompression) is the handler's business: the
// node bounds each RPC separately (package node), the ledger each endpoint.
//
// It is not a rate limiter of callers by identity (admission, per-creator
// quotas and the like belong to the service that knows who the caller is),
// and not a proxy.
package httpguard
