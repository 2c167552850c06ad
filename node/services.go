package node

import (
	"context"
	"crypto/x509"
	"net/http"

	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/policy"
)

// Services beside the node's own API: a capability that answers other
// nodes on the node's listener (federation's sub-model calls) mounts its
// handler here, signs ledger entries and messages with the platform key, and
// runs programs in the node's isolates under its run slots. Host-call
// handlers learn which run called them from their context (RunInfoFrom).

// Mount serves h for pattern (an http.ServeMux pattern, such as "POST
// /v1/federation/call") on the node's listener. Call it before Serve. The
// handler bounds its own requests.
func (n *Node) Mount(pattern string, h http.Handler) {
	n.mounted = append(n.mounted, mounted{pattern, h})
}

type mounted struct {
	pattern string
	h       http.Handler
}

// SignEntry signs an entry of kind with the platform key, for the
// node's ledger or for a message to another node in the ledger's one
// signed form.
func (n *Node) SignEntry(kind verify.Kind, body any) (*verify.SignedEntry, error) {
	return verify.NewEntry(n.platform.Signer(), kind, body)
}

// RunProgram runs cfg in one of the node's isolates, once a run slot is
// free (or ctx ends).
func (n *Node) RunProgram(ctx context.Context, cfg *isolate.Config) (*isolate.Result, error) {
	select {
	case n.runSlots <- struct{}{}:
		defer func() { <-n.runSlots }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	n.metrics.workerStart.Inc()
	return n.runner.Run(ctx, cfg)
}

// Certificate is the node's own TLS certificate (certified by the
// platform key), which callers of mounted services see.
func (n *Node) Certificate() *x509.Certificate { return n.nodeCert.Leaf }

// RunInfo is what a host call's handler knows of the run that made it.
type RunInfo struct {
	Session    string
	Policy     *policy.Policy
	PolicyHash [32]byte
}

type runInfoKey struct{}

// RunInfoFrom returns the run a host call came from, when a node's
// session made it.
func RunInfoFrom(ctx context.Context) (RunInfo, bool) {
	ri, ok := ctx.Value(runInfoKey{}).(RunInfo)
	return ri, ok
}

// WithRunInfo returns ctx carrying ri, as the node gives a run's host
// calls: for a host call's handler driven by hand (its tests).
func WithRunInfo(ctx context.Context, ri RunInfo) context.Context {
	return context.WithValue(ctx, runInfoKey{}, ri)
}
