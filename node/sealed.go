package node

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/cloisterhq/cloister/broker"
	"github.com/cloisterhq/cloister/policy"
	"github.com/cloisterhq/cloister/sealed"
)

// acceptsSealed checks that the node can run the policy's sealed
// programs: it must read grants from a ledger.
func (n *Node) acceptsSealed(pol *policy.Policy) error {
	for _, p := range pol.Programs {
		if p.Sealed != nil && n.grants == nil {
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("policy %q names sealed program %q; this node reads no ledger, so it cannot find the grant its key is released under", pol.Name, p.Name))
		}
	}
	return nil
}

// obtainProgramKey finds the grant for the isolate on the ledger and asks
// the program's brokers for their shares (broker.ObtainSealed): each
// broker answers only once its key.released entry is committed; each
// share is checked against the artifact's commitment before the key is
// combined.
func (n *Node) obtainProgramKey(ctx context.Context, prog *policy.Program, iso *broker.Isolate) (*sealed.Key, error) {
	key, rel, grant, err := broker.ObtainSealed(ctx, n.grants, prog, iso, string(n.class))
	var entries []uint64
	var errs []error
	for _, r := range rel {
		if r.Err == nil {
			entries = append(entries, r.Entry)
		} else {
			errs = append(errs, r.Err)
		}
	}
	if err != nil {
		n.log.Warn("sealed program key refused", "session", iso.Session, "artifact", prog.Sealed.Digest, "grant", grant, "err", err)
		return nil, err
	}
	n.log.Info("sealed program key obtained", "session", iso.Session, "artifact", prog.Sealed.Digest, "grant", grant, "key_released", entries, "brokers_failed", len(errs), "err", errors.Join(errs...))
	return key, nil
}
