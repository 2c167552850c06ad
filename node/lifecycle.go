package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/software"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/policy"
)

// createSession admits the creator, checks that this node can serve the
// policy and starts a session for it. Admission and the quotas are checked
// before the policy is parsed; the session stores the policy's canonical
// form, whatever padding the document came with. peer is the client's
// address ("host:port"), which counts unsigned creates in open mode.
func (n *Node) createSession(ctx context.Context, req *cloisterv1.CreateSessionRequest, peer string) (*session, error) {
	if n.draining.Load() {
		return nil, errDraining("new sessions")
	}
	doc := req.Policy
	if len(doc) > policy.MaxFileSize {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("policy is %d bytes, at most %d accepted", len(doc), policy.MaxFileSize))
	}
	now := n.now()
	who, err := n.admit.admit(ctx, req, peer, now)
	if err != nil {
		return nil, err
	}
	if err := n.admit.checkDisk(int64(len(doc))); err != nil {
		return nil, err
	}
	// The document's length bounds its canonical form's: reserved now,
	// the difference given back once it is known.
	if err := n.admit.reserveSession(who, int64(len(doc)), req.Auth, now); err != nil {
		return nil, err
	}
	s, err := n.startSession(ctx, who, doc, req.Replica, now)
	if err != nil {
		n.admit.release(who, 1, int64(len(doc)))
		return nil, err
	}
	n.admit.release(who, 0, int64(len(doc))-s.stored)
	return s, nil
}

func (n *Node) startSession(ctx context.Context, who creator, doc []byte, replica *cloisterv1.ReplicaSet, now time.Time) (*session, error) {
	t0 := time.Now()
	view, err := n.policies.get(doc)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("policy: %w", err))
	}
	pol := view.pol
	if pol.Expired(now) {
		return nil, refused(connect.CodeFailedPrecondition, ruleExpired, "policy %q expired at %s", pol.Name, pol.Expires.UTC().Format(time.RFC3339))
	}
	if err := n.accepts(view); err != nil {
		return nil, err
	}
	rep, err := n.checkReplica(pol, replica)
	if err != nil {
		return nil, err
	}
	if err := n.checkEngine(ctx, pol); err != nil {
		return nil, err
	}
	id, err := n.store.drawID()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	defer n.store.unused(id) // nothing once the first frame is saved
	hash := view.hash
	checked := time.Since(t0)
	c, err := newCore(ctx, id, hash, n.attester)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	ck, err := c.keys()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	rec := &record{
		Version: stateVersion, ID: id, Policy: pol.Canonical(), Creator: string(who), Created: now, Keys: ck,
		State: stateProvisioning, Programs: map[string]*slotRecord{}, Inputs: map[string]*slotRecord{},
		Outputs: map[string]*outputRecord{}, Replica: rep,
	}
	rec.Events = append(rec.Events, eventRecord{Kind: EventSessionCreated, Time: now})
	created := map[string]any{
		"session": id, "policy_hash": hex.EncodeToString(hash[:]), "isolate_class": string(n.class),
		"platform_key": n.platform.Public().SigningString(), "evidence_sha256": hex.EncodeToString(c.evidenceSHA256[:]),
	}
	if rep != nil {
		created["replica_set"], created["replica_members"] = rep.Set, rep.Members
	}
	entry := n.stage(rec, 0, LedgerKindSessionEvent, created)
	keyed := time.Since(t0)
	if err := n.store.save(rec, true); err != nil {
		return nil, storeError(err)
	}
	stored := time.Since(t0)
	s := &session{n: n, id: id, view: view, pol: pol, hash: hash, core: c, rec: rec, done: make(chan struct{}), seen: protocol.NewReplayWindow(maxSessionNonces),
		creator: who, stored: int64(len(rec.Policy))}
	s.queue(0, entry, false)
	n.mu.Lock()
	n.sessions[id] = s
	n.mu.Unlock()
	// Its steps, for bench/market: the policy parsed and checked, the
	// session's keys and evidence made, its first frame stored durably.
	n.log.Info("session created", "session", id, "policy", pol.Name, "policy_hash", hex.EncodeToString(hash[:]), "creator", who,
		"checked_us", checked.Microseconds(), "keys_us", (keyed - checked).Microseconds(), "stored_us", (stored - keyed).Microseconds())
	return s, nil
}

// accepts refuses policies this node could never satisfy, so that the
// principals learn it at once rather than at attestation.
func (n *Node) accepts(view *policyView) error {
	pol := view.pol
	iso, ok := pol.Isolate(string(n.class))
	if !ok {
		var classes []string
		for _, i := range pol.Isolates {
			classes = append(classes, i.Class)
		}
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("policy %q accepts isolate classes %v; this node's isolates are %q", pol.Name, classes, n.class))
	}
	if n.class == attest.ClassSoftware {
		listed := false
		for _, k := range iso.PlatformKeys {
			listed = listed || software.PlatformKeyMatches(k, n.PlatformKey())
		}
		if !listed {
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("policy %q does not list this node's platform key %s under isolates[class=software].platform_keys", pol.Name, n.platform.Public().SigningString()))
		}
	}
	if len(pol.Programs) != 1 {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("policy %q lists %d programs; a session runs exactly one", pol.Name, len(pol.Programs)))
	}
	if err := n.acceptsHostCalls(pol); err != nil {
		return err
	}
	if err := n.acceptsSealed(pol); err != nil {
		return err
	}
	for _, o := range pol.Outputs {
		for _, r := range o.Readers {
			p := principalOf(pol, r)
			if p == nil {
				return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("output %q: reader %q is not a principal", o.Name, r))
			}
			if _, err := view.sealingKey(p); err != nil {
				return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("output %q: reader %q: %w", o.Name, r, err))
			}
		}
	}
	return nil
}

// restore loads every stored session. A record that does not open or
// parse is logged and left on disk untouched (it may belong to another
// platform key); it is never half-served.
func (n *Node) restore() error {
	live, closed, err := n.store.list()
	if err != nil {
		return fmt.Errorf("node: listing stored sessions: %w", err)
	}
	for _, ts := range closed {
		if ts.entriesErr != nil {
			n.log.Error("a closed session's unconfirmed ledger entries are not replayed", "session", ts.ID, "err", ts.entriesErr)
		}
		if len(ts.Entries) > 0 && n.events != nil {
			// Closed while some of its entries were unconfirmed.
			n.recActive.Add(1)
			go n.replayClosed(ts)
			ts.Entries = nil
		}
		ts.SealedEntries = nil // the log keeps them until they are recorded
		n.closed.add(ts)
	}
	for _, id := range live {
		if n.closed.has(id) {
			// Closed, but the node stopped before its files were gone.
			if err := n.store.removeSession(id); err != nil {
				n.log.Error("closed session not erased", "session", id, "err", err)
			}
			continue
		}
		err := n.restoreOne(id)
		switch {
		case errors.Is(err, errNoFrame):
			// The node stopped while creating it: the session was never
			// acknowledged to anyone, and is not served half-written.
			n.log.Info("removing a session whose creation did not finish", "session", id)
			if err := n.store.removeSession(id); err != nil {
				n.log.Error("unfinished session not removed", "session", id, "err", err)
			}
		case err != nil:
			n.log.Error("stored session not restored", "session", id, "err", err)
		}
	}
	// Every close the log names is now finished (files erased), so the
	// closes past what is remembered can go from it.
	n.compactClosed(false)
	return nil
}

func (n *Node) restoreOne(id string) error {
	rec, err := n.store.load(id)
	if err != nil {
		return err
	}
	view, err := n.policies.get(rec.Policy)
	if err != nil {
		return fmt.Errorf("stored policy: %w", err)
	}
	pol := view.pol
	c, err := restoreCore(id, view.hash, n.attester, rec.Keys)
	if err != nil {
		return err
	}
	if rec.Programs == nil || rec.Inputs == nil || rec.Outputs == nil {
		return errors.New("stored state is incomplete")
	}
	s := &session{n: n, id: id, view: view, pol: pol, hash: view.hash, core: c, rec: rec, done: make(chan struct{}), seen: protocol.NewReplayWindow(maxSessionNonces),
		creator: creator(rec.Creator), stored: n.store.sizeOf(rec)}
	if s.creator == "" {
		s.creator = "unknown" // stored by a version that did not record it
	}
	var restartEntry *stagedEntry
	switch rec.State {
	case stateFinished, stateFailed:
		s.markDone()
	case stateRunning:
		// The run was cut short by the stop. Program and inputs are
		// still sealed on disk and the run is a pure function of them
		// (plus the policy-derived seed), so it is run again, unless
		// the policy has expired meanwhile: then nobody could fetch
		// its result, and it allows nothing more.
		now := n.now()
		rec.Restarted++
		rec.Events = append(rec.Events, eventRecord{Kind: EventRunRestarted, Time: now})
		switch {
		case pol.Expired(now):
			rec.State, rec.Reason = stateFailed, fmt.Sprintf("policy %q expired at %s while the node was stopped during the run; not run again", pol.Name, pol.Expires.UTC().Format(time.RFC3339))
			s.markDone()
		case rec.Restarted > maxRestarts:
			rec.State, rec.Reason = stateFailed, fmt.Sprintf("the node stopped during the run %d times; not retried again", rec.Restarted-1)
			s.markDone()
		default:
			n.log.Info("restarting interrupted run", "session", id, "restarts", rec.Restarted)
		}
		restartEntry = n.stage(rec, len(rec.Events)-1, LedgerKindSessionEvent, map[string]any{"session": id, "policy_hash": hex.EncodeToString(view.hash[:]), "restarts": rec.Restarted, "state": rec.State})
		if err := n.store.save(rec, true); err != nil {
			return err
		}
	case stateProvisioning:
	default:
		return fmt.Errorf("stored state %q unknown", rec.State)
	}
	// Now that the record is settled (the recorder notes indexes in it):
	// the entries of committed steps the log had not confirmed when the
	// node stopped, in step order, the restart's among them.
	s.queueStaged()
	if restartEntry != nil && restartEntry.Number == 0 {
		s.queue(len(rec.Events)-1, restartEntry, false) // an EventLog without numbers stages nothing
	}
	n.mu.Lock()
	n.sessions[id] = s
	n.mu.Unlock()
	n.admit.restored(s.creator, s.stored)
	if rec.State == stateRunning {
		s.mu.Lock()
		s.startRun()
		s.mu.Unlock()
	}
	s.resumeReplicaWatch()
	return nil
}

// maxRestarts bounds how often a run interrupted by node stops is retried,
// so that a program that brings the node down cannot do so forever.
const maxRestarts = 3

// checkEngine refuses a session whose policy names an engine this node
// cannot run (its worker binary is not installed), before anyone uploads
// anything to it. A runner that is not an isolate runtime leaves the
// check to its Run.
func (n *Node) checkEngine(ctx context.Context, pol *policy.Policy) error {
	er, ok := n.runner.(interface {
		ForEngine(context.Context, string) (*isolate.Runtime, error)
	})
	if pol.Engine == "" || !ok {
		return nil
	}
	if _, err := er.ForEngine(ctx, pol.Engine); err != nil {
		return refused(connect.CodeFailedPrecondition, ruleEngine, "policy %q asks for the %s engine, which this node cannot run: %v", pol.Name, pol.Engine, err)
	}
	return nil
}
