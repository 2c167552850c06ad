package node

import (
	"context"
	"fmt"
	"sort"

	"connectrpc.com/connect"

	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/policy"
)

// The host calls a node offers: the standard ones
// (isolate.StandardHostCalls), and those Options.HostCalls adds (federation's sub-model calls, accelerated
// primitives). A policy names the ones its program may make
// ("host_calls"); the node refuses a policy naming one it does not offer,
// and a run gets exactly the ones its policy names.

// hostCalls returns the calls this node offers.
func hostCalls(extra map[string]isolate.HostCall) (map[string]isolate.HostCall, error) {
	calls := isolate.StandardHostCalls()
	for name, c := range extra {
		if err := isolate.ValidateHostCallName(name); err != nil {
			return nil, err
		}
		if _, dup := calls[name]; dup {
			return nil, fmt.Errorf("host call %q is a standard one", name)
		}
		calls[name] = c
	}
	return calls, nil
}

// acceptsHostCalls checks that this node offers every call the policy
// names, and that a deterministic policy names only deterministic ones.
func (n *Node) acceptsHostCalls(pol *policy.Policy) error {
	for _, c := range pol.HostCalls {
		hc, ok := n.hostCalls[c.Name]
		if !ok {
			offered := make([]string, 0, len(n.hostCalls))
			for name := range n.hostCalls {
				offered = append(offered, name)
			}
			sort.Strings(offered)
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("policy %q allows host call %q, which this node does not offer (it offers %v)", pol.Name, c.Name, offered))
		}
		if pol.Deterministic && !hc.Deterministic {
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("policy %q is deterministic and allows host call %q, whose answer may differ between nodes", pol.Name, c.Name))
		}
	}
	return nil
}

// runHostCalls returns the calls a run of session id under pol may make;
// their handlers find the run in their context (RunInfoFrom).
func (n *Node) runHostCalls(id string, pol *policy.Policy) map[string]isolate.HostCall {
	if len(pol.HostCalls) == 0 {
		return nil
	}
	info := RunInfo{Session: id, Policy: pol, PolicyHash: pol.Hash()}
	calls := make(map[string]isolate.HostCall, len(pol.HostCalls))
	for _, c := range pol.HostCalls {
		if hc, ok := n.hostCalls[c.Name]; ok {
			handle := hc.Handle
			hc.Handle = func(ctx context.Context, req []byte) ([]byte, error) {
				return handle(context.WithValue(ctx, runInfoKey{}, info), req)
			}
			calls[c.Name] = hc
		}
	}
	return calls
}
