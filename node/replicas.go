package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"connectrpc.com/connect"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/isolate"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/policy"
)

// Replicated sessions (docs/piee.md, "Replicated sessions"; decision
// 0134). A policy asking for N replicas runs as N sessions, one per node
// of N organisations, that join one replica set on the ledger (their
// session.created entries name it). Each replica runs deterministically,
// seeded by the set id, and commits its result digest in a
// replica.result entry signed by its session key. A replica's node
// releases the result only once the ledger shows every member's digest
// and they agree; when they disagree it refuses, naming the replicas,
// and records a replica.discrepancy entry. Readers check all of it
// themselves from the ledger (the client), so a node that released
// early would gain nothing.

// LedgerKindReplicaResult is the entry a replica commits its digest in.
const LedgerKindReplicaResult = "replica.result"

// LedgerKindReplicaDiscrepancy records that a set's replicas disagreed.
const LedgerKindReplicaDiscrepancy = "replica.discrepancy"

// EventReplicaCommitted is the step of a replica committing its digest.
const EventReplicaCommitted = "session.replica_committed"

// ReplicaReader reads replica sets on the node's ledger
// (*ledger/client.Client is one).
type ReplicaReader interface {
	ReplicaSet(ctx context.Context, id string) (*lclient.ReplicaSet, map[uint64][]byte, error)
}

// ReplicaFaults inject faults in a node's replicas, for tests and demos
// of what readers refuse; never set them otherwise.
type ReplicaFaults struct {
	// Corrupt commits a digest other than the run's, as a replica whose
	// isolate computed another result would.
	Corrupt bool
	// ReleaseEarly releases results without waiting for agreement.
	ReleaseEarly bool
}

// replicaRecord is a replica session's set, kept in its state.
type replicaRecord struct {
	Set     string   `json:"set"`
	Members []string `json:"members"`
	Digest  string   `json:"digest,omitempty"`
}

// checkReplica refuses a session whose replica set does not fit its
// policy or this node.
func (n *Node) checkReplica(pol *policy.Policy, rep *cloisterv1.ReplicaSet) (*replicaRecord, error) {
	want := pol.ReplicaCount()
	switch {
	case want < 2 && rep == nil:
		return nil, nil
	case want < 2:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("policy %q asks for one replica; the request names replica set %q", pol.Name, rep.Id))
	case rep == nil:
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("policy %q asks for %d replicas: a session of it joins a replica set of %d nodes of distinct organisations, which the client chooses ('cloister session create' does)", pol.Name, want, want))
	case n.opts.Ledger == nil || n.opts.Replicas == nil:
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("policy %q asks for %d replicas, and replicas agree on a ledger; this node records to none it can read", pol.Name, want))
	case protocol.ValidSessionID(rep.Id) != nil:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("replica set id %.40q: want %d lower-case hex digits", rep.Id, 2*protocol.SessionIDSize))
	case len(rep.Members) != want:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("policy %q asks for %d replicas; replica set %s names %d nodes", pol.Name, want, rep.Id, len(rep.Members)))
	case !slices.Contains(rep.Members, n.platform.Public().SigningString()):
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("replica set %s does not name this node (%s)", rep.Id, n.platform.Public().SigningString()))
	}
	return &replicaRecord{Set: rep.Id, Members: slices.Clone(rep.Members)}, nil
}

// replicaDigest computes a replica's result digest from the isolate's
// result, before the output hashes leave the report.
func replicaDigest(spec runSpec, inputDigests map[string]string, res *isolate.Result) (string, error) {
	key := protocol.ReplicaDigestKey(spec.replicaSet, hex.EncodeToString(spec.programSHA256[:]), spec.inputOrder, inputDigests)
	byName := map[string]isolate.OutputInfo{}
	for _, o := range res.Report.Outputs {
		byName[o.Name] = o
	}
	var outs []protocol.ReplicaOutput
	for _, o := range spec.outputs {
		var data []byte
		switch info, ok := byName[o.name]; {
		case ok:
			outs = append(outs, protocol.ReplicaOutput{Name: o.name, Bytes: info.Bytes, SHA256: info.SHA256})
			continue
		case o.name == outputStdout:
			data = res.Stdout
		case o.name == outputStderr:
			data = res.Stderr
		default:
			continue
		}
		sum := sha256.Sum256(data)
		outs = append(outs, protocol.ReplicaOutput{Name: o.name, Bytes: int64(len(data)), SHA256: hex.EncodeToString(sum[:])})
	}
	return protocol.ReplicaDigest(key, string(res.Report.Outcome), res.Report.ExitCode, outs)
}

// stageReplicaResult appends the step that commits a replica's digest and
// stages its replica.result entry. Callers hold s.mu, after the run's end
// was appended.
func (s *session) stageReplicaResult(digest string) *stagedEntry {
	if s.n.opts.ReplicaFaults.Corrupt {
		sum := sha256.Sum256([]byte("corrupt\x00" + digest))
		digest = hex.EncodeToString(sum[:])
	}
	s.rec.Replica.Digest = digest
	ph := hex.EncodeToString(s.hash[:])
	msg, err := protocol.ReplicaResultMessage(s.rec.Replica.Set, s.id, ph, digest)
	if err != nil {
		s.n.log.Error("replica result", "session", s.id, "err", err)
		return nil
	}
	sig, err := s.core.sign(msg)
	if err != nil {
		s.n.log.Error("signing the replica result", "session", s.id, "err", err)
		return nil
	}
	s.rec.Events = append(s.rec.Events, eventRecord{Kind: EventReplicaCommitted, Time: s.n.now()})
	return s.n.stage(s.rec, len(s.rec.Events)-1, LedgerKindReplicaResult, map[string]any{
		"set": s.rec.Replica.Set, "session": s.id, "policy_hash": ph, "digest": digest,
		"session_key": s.core.spki, "signature": sig,
	})
}

// replicaGate says whether a replica's result may be released: only once
// the ledger holds every member's digest and they are all this one's.
// When they disagree it records the discrepancy (once, by whichever
// member gets there first) and refuses, naming the replicas.
func (s *session) replicaGate(ctx context.Context, rep replicaRecord) error {
	if s.n.opts.ReplicaFaults.ReleaseEarly {
		return nil
	}
	rs, _, err := s.n.opts.Replicas.ReplicaSet(ctx, rep.Set)
	if errors.Is(err, lclient.ErrNoReplicaSet) {
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("replica set %s is not on the ledger yet: no result is released before its replicas agree", rep.Set))
	}
	if err != nil {
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("replica set %s: reading the ledger: %v; no result is released before its replicas agree", rep.Set, err))
	}
	if groups := rs.Groups(); len(groups) > 1 {
		results := map[string]string{}
		for _, m := range rs.Members {
			if m.Result != 0 {
				results[m.Node] = m.Digest
			}
		}
		if rs.Discrepancy == 0 {
			s.recordDiscrepancy(ctx, rep.Set, results)
		}
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%w; no result is released", rs.Disagreement()))
	}
	committed := 0
	for _, m := range rs.Members {
		if m.Result != 0 {
			committed++
		}
	}
	if !rs.Agreed() {
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("replica set %s: %d of %d replicas committed their results; none is released before all agree", rep.Set, committed, len(rs.Members)))
	}
	if rs.Members[0].Digest != rep.Digest {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("replica set %s agreed on a digest that is not this replica's", rep.Set))
	}
	if s.pol.ReplicaClasses == policy.ReplicaClassesDistinct {
		seen := map[string]string{}
		for _, m := range rs.Members {
			if o, dup := seen[m.Class]; dup {
				return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("replica set %s: nodes %s and %s are both of class %s; policy %q asks for distinct classes", rep.Set, o, m.Node, m.Class, s.pol.Name))
			}
			seen[m.Class] = m.Node
		}
	}
	return nil
}

// recordDiscrepancy appends the set's replica.discrepancy entry; another
// member may have been first, which the ledger refuses as a replay.
func (s *session) recordDiscrepancy(ctx context.Context, set string, results map[string]string) {
	if s.n.events == nil {
		return
	}
	if _, err := s.n.events.Record(ctx, LedgerKindReplicaDiscrepancy, map[string]any{"set": set, "results": results}); err != nil {
		s.n.log.Info("replica discrepancy not recorded by this node", "set", set, "err", err)
		return
	}
	s.n.log.Warn("replicas disagree: discrepancy recorded", "set", set, "results", results)
}

// replicaWatchBound bounds how long a replica's node watches its set for
// the other members' results after committing its own.
const replicaWatchBound = 10 * time.Minute

// watchReplicas follows the set after this replica committed, for at most
// bound (what is left of replicaWatchBound), until every member has, and
// records a discrepancy if they disagree: the ledger says so whether or
// not any reader asks.
func (s *session) watchReplicas(set string, bound time.Duration) {
	if bound <= 0 {
		return
	}
	s.n.wg.Add(1)
	go func() {
		defer s.n.wg.Done()
		ctx, cancel := context.WithTimeout(s.n.baseCtx, bound)
		defer cancel()
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			s.mu.Lock()
			closed := s.rec.State == stateClosed
			s.mu.Unlock()
			if closed {
				return
			}
			rs, _, err := s.n.opts.Replicas.ReplicaSet(ctx, set)
			if err != nil {
				continue
			}
			committed, results := 0, map[string]string{}
			for _, m := range rs.Members {
				if m.Result != 0 {
					committed++
					results[m.Node] = m.Digest
				}
			}
			if rs.Disagreement() != nil && rs.Discrepancy == 0 {
				s.recordDiscrepancy(ctx, set, results)
			}
			if committed == len(rs.Members) || rs.Discrepancy != 0 {
				return
			}
		}
	}()
}

// resumeReplicaWatch follows, after a restart, the set of a replica that
// committed its result before the node stopped, for what is left of
// replicaWatchBound since its run ended. Callers hold no lock.
func (s *session) resumeReplicaWatch() {
	s.mu.Lock()
	rep, state := s.rec.Replica, s.rec.State
	var ended time.Time
	for _, e := range s.rec.Events {
		if e.Kind == EventRunFinished {
			ended = e.Time
		}
	}
	s.mu.Unlock()
	if rep == nil || rep.Digest == "" || state != stateFinished || ended.IsZero() || s.n.opts.Replicas == nil {
		return
	}
	s.watchReplicas(rep.Set, replicaWatchBound-s.n.now().Sub(ended))
}
