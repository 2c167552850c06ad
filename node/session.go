package node

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/policy"
)

// Roles a policy gives principals.
const (
	roleProgramProvider = policy.RoleProgramProvider
	roleDataProvider    = policy.RoleDataProvider
	roleResultReader    = policy.RoleResultReader
)

// maxSessionNonces bounds the signed requests one session accepts within
// protocol.ReplayMemory (about 109 a second sustained), so that its
// principals cannot grow its replay memory without bound.
const maxSessionNonces = 1 << 16

// session is the API side of one session: it enforces the policy on
// signed requests and keeps envelopes; its core holds the keys.
type session struct {
	n    *Node
	id   string
	view *policyView // shared with other sessions of the same policy
	pol  *policy.Policy
	hash [32]byte
	core *core

	// creator is whose quotas the session counts against; stored is what
	// it holds on disk as the quotas count it (guarded by mu).
	creator creator
	stored  int64

	mu     sync.Mutex
	rec    *record
	done   chan struct{} // closed when the session reaches a terminal state
	cancel context.CancelFunc
	seen   *protocol.ReplayWindow // signed requests accepted recently

	// Ledger entries of committed steps wait here, in step order, for
	// recordLoop; recDrained is closed when the queue empties (nil: none
	// pending).
	recMu      sync.Mutex
	recQueue   []recordJob
	recDrained chan struct{}
	recFailed  bool // an entry was left to the next start; later ones wait for it
	recBusy    int  // 1 + the event whose entry recordLoop appends or notes; 0: none

	// uploads are the streamed uploads under way, by id (stream.go;
	// guarded by mu).
	uploads map[string]*pendingUpload
	// reads are the read ids of streamed outputs handed to readers, by id
	// (stream.go; guarded by mu).
	reads map[string]*readGrant
}

// recordJob is one committed step's entry to put on the event log: the
// event it notes the index in (-1: none); closes marks the session.closed
// entry, the last.
type recordJob struct {
	event  int
	entry  *stagedEntry
	closes bool
	// persist, on the last entry a restored session that is not running
	// sent again, saves the record once they are all confirmed (the
	// session may take no step that would, and its entries would be sent
	// again at every start) — unless it has taken a step since: then that
	// step saved it, and this state may be one deliberately kept off disk.
	persist *restoredState
}

// restoredState is what a restored session's record was when its staged
// entries were queued.
type restoredState struct {
	state  string
	events int
}

func (s *session) terminal() bool {
	switch s.rec.State {
	case stateFinished, stateFailed, stateClosed:
		return true
	}
	return false
}

// markDone closes done once; callers hold s.mu.
func (s *session) markDone() {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
}

// refused builds the error every rule violation returns: the code, the
// rule, and who broke it, so that a CLI user sees exactly why.
func refused(code connect.Code, rule, format string, args ...any) error {
	return connect.NewError(code, &refusal{rule: rule, msg: fmt.Sprintf(format, args...)})
}

// refusal is a rule violation; metrics count them by rule.
type refusal struct {
	rule, msg string
}

func (r *refusal) Error() string { return fmt.Sprintf("refused by rule %q: %s", r.rule, r.msg) }

// Rule names, as they appear in refusals and in docs/sessions.md.
const (
	ruleSigned       = "signed-by-principal"
	ruleProvider     = "listed-provider-only"
	ruleOnce         = "write-once"
	ruleProgramHash  = "program-hash"
	ruleSealed       = "sealed-to-session"
	ruleReader       = "readers-only"
	ruleExpired      = "policy-not-expired"
	ruleEngine       = "engine-available"
	ruleCloser       = "principals-close"
	ruleState        = "session-state"
	ruleFresh        = "fresh-request"
	ruleKnownName    = "named-in-policy"
	ruleSessionConn  = "session-connection"
	ruleOutputExists = "output-produced"
)

// authorize checks a signed request: a principal of the policy, a valid
// signature over this exact operation, a fresh timestamp and a nonce not
// seen before. Callers hold s.mu.
func (s *session) authorize(auth *cloisterv1.SignedRequest, op, name string, payload []byte, now time.Time) (*policy.Principal, error) {
	if auth == nil || auth.Principal == "" {
		return nil, refused(connect.CodeUnauthenticated, ruleSigned, "%s request carries no principal signature", op)
	}
	p := principalOf(s.pol, auth.Principal)
	if p == nil {
		return nil, refused(connect.CodePermissionDenied, ruleSigned, "%q is not a principal of policy %q", auth.Principal, policyName(s.pol))
	}
	pub, err := s.view.signingKey(p)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("principal %q: %w", p.ID, err))
	}
	if len(auth.Nonce) < 16 || len(auth.Nonce) > 64 {
		return nil, refused(connect.CodeInvalidArgument, ruleFresh, "request nonce is %d bytes, want 16 to 64", len(auth.Nonce))
	}
	var ph [32]byte
	if payload != nil {
		ph = sha256.Sum256(payload)
	}
	msg := protocol.RequestMessage(s.id, op, name, ph, s.hash, auth.UnixMs, auth.Nonce)
	if !ed25519.Verify(pub, msg, auth.Signature) {
		return nil, refused(connect.CodeUnauthenticated, ruleSigned, "signature on %s request does not verify with the signing key of principal %q", op, p.ID)
	}
	t := time.UnixMilli(auth.UnixMs)
	if d := now.Sub(t); d > protocol.MaxRequestSkew || d < -protocol.MaxRequestSkew {
		return nil, refused(connect.CodePermissionDenied, ruleFresh, "%s request of principal %q is dated %s, more than %s from the node's clock %s", op, p.ID, t.UTC().Format(time.RFC3339), protocol.MaxRequestSkew, now.UTC().Format(time.RFC3339))
	}
	var re *protocol.ReplayError
	if err := s.seen.Admit(nil, auth.Nonce, now); errors.As(err, &re) {
		if re.Full {
			return nil, refused(connect.CodeResourceExhausted, ruleFresh, "session %s accepted %d signed requests in the last %s, its limit; retry later", s.id, re.Max, protocol.ReplayMemory)
		}
		return nil, refused(connect.CodePermissionDenied, ruleFresh, "%s request of principal %q replays a request already seen", op, p.ID)
	}
	return p, nil
}

// checkLive refuses operations on a policy that has expired.
func (s *session) checkLive(now time.Time) error {
	if s.pol.Expired(now) {
		return refused(connect.CodeFailedPrecondition, ruleExpired, "policy %q expired at %s", policyName(s.pol), s.pol.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}

// upload provisions one program or input.
func (s *session) upload(ctx context.Context, program bool, req *cloisterv1.UploadRequest) (*cloisterv1.UploadResponse, error) {
	now := s.n.now()
	kind, op, _ := uploadKind(program)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.uploadable(now); err != nil {
		return nil, err
	}
	p, err := s.authorize(req.Auth, op, req.Name, req.Envelope, now)
	if err != nil {
		return nil, err
	}
	wantHash, err := s.checkUploader(p, program, req.Name)
	if err != nil {
		return nil, err
	}
	if program {
		err = s.core.checkProgram(req.Name, req.Envelope, wantHash)
	} else {
		err = s.core.checkInput(req.Name, req.Envelope, wantHash)
	}
	if err := uploadRefusal(err, kind, req.Name, p.ID); err != nil {
		return nil, err
	}
	kept := protocol.KindInput
	if program {
		kept = protocol.KindProgram
	}
	size := int64(len(req.Envelope))
	if err := s.n.admit.checkDisk(size); err != nil {
		s.core.drop(kept, req.Name)
		return nil, err
	}
	if err := s.n.admit.addBytes(s.creator, size, false, now); err != nil {
		s.core.drop(kept, req.Name)
		return nil, err
	}
	sha, inline, err := s.n.store.putEnvelope(s.id, req.Envelope)
	if err != nil {
		s.core.drop(kept, req.Name)
		s.n.admit.release(s.creator, 0, size)
		return nil, storeError(err)
	}
	slot := &slotRecord{Principal: p.ID, EnvelopeSHA256: sha, Inline: inline, Uploaded: now, Signature: req.Auth.Signature}
	resp, err := s.accept(program, req.Name, slot, req.Auth, size, now)
	if err != nil {
		s.core.drop(kept, req.Name)
		return nil, err
	}
	return resp, nil
}

// uploadKind names an upload's kind, operation and role.
func uploadKind(program bool) (kind, op string, role policy.Role) {
	if program {
		return "program", protocol.OpUploadProgram, roleProgramProvider
	}
	return "input", protocol.OpUploadInput, roleDataProvider
}

// uploadable refuses uploads to a session that no longer takes them; s.mu
// is held.
func (s *session) uploadable(now time.Time) error {
	if s.n.draining.Load() {
		return errDraining("uploads")
	}
	if s.rec.State != stateProvisioning {
		return refused(connect.CodeFailedPrecondition, ruleState, "session %s is %s; uploads are accepted only while provisioning", s.id, s.rec.State)
	}
	return s.checkLive(now)
}

// checkUploader checks that principal p may upload the program or input
// name now (it is in the policy, p is its provider, it was not uploaded
// yet) and returns the SHA-256 its plaintext must have (zero: any).
// s.mu is held.
func (s *session) checkUploader(p *policy.Principal, program bool, name string) ([32]byte, error) {
	kind, _, role := uploadKind(program)
	var provider string
	var wantHash [32]byte
	var err error
	if program {
		prog := findProgram(s.pol, name)
		if prog == nil {
			return wantHash, refused(connect.CodeNotFound, ruleKnownName, "policy %q lists no program named %q (principal %q)", policyName(s.pol), name, p.ID)
		}
		if prog.Sealed != nil {
			return wantHash, refused(connect.CodePermissionDenied, ruleProvider, "program %q is sealed: the node fetches it from %s and obtains its key from brokers; nobody uploads it (principal %q)", name, prog.Sealed.Digest, p.ID)
		}
		provider = prog.Provider
		if wantHash, err = programHash(s.pol, prog.Name); err != nil {
			return wantHash, connect.NewError(connect.CodeInternal, err)
		}
	} else {
		in := findInput(s.pol, name)
		if in == nil {
			return wantHash, refused(connect.CodeNotFound, ruleKnownName, "policy %q lists no input named %q (principal %q)", policyName(s.pol), name, p.ID)
		}
		if in.Stored() {
			return wantHash, refused(connect.CodePermissionDenied, ruleProvider, "input %q is fetched by the node from %s, not uploaded (principal %q)", name, in.From.Digest, p.ID)
		}
		provider = in.Provider
		if h, ok := in.PinnedSHA256(); ok {
			wantHash = h
		}
	}
	if p.ID != provider || !hasRole(p, role) {
		return wantHash, refused(connect.CodePermissionDenied, ruleProvider, "principal %q may not upload %s %q: its provider is %q (role %s)", p.ID, kind, name, provider, role)
	}
	slots := s.rec.Inputs
	if program {
		slots = s.rec.Programs
	}
	if prev := slots[name]; prev != nil {
		return wantHash, refused(connect.CodeAlreadyExists, ruleOnce, "%s %q was already uploaded by %q at %s; principal %q may not replace it", kind, name, prev.Principal, prev.Uploaded.UTC().Format(time.RFC3339), p.ID)
	}
	return wantHash, nil
}

// uploadRefusal turns the core's verdict on an upload into the refusal the
// uploader gets (nil: accepted).
func uploadRefusal(err error, kind, name, principal string) error {
	var hm *hashMismatchError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &hm):
		return refused(connect.CodePermissionDenied, ruleProgramHash, "%v (uploaded by %q)", err, principal)
	case errors.Is(err, errSealed):
		return refused(connect.CodeInvalidArgument, ruleSealed, "%s %q from %q: %v", kind, name, principal, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}

// accept records an upload that was checked and stored (size bytes, taken
// from the creator's quota already): its slot, its event and ledger entry,
// and the run if it was the last. On an error nothing is recorded and the
// quota is given back. s.mu is held.
func (s *session) accept(program bool, name string, slot *slotRecord, auth *cloisterv1.SignedRequest, size int64, now time.Time) (*cloisterv1.UploadResponse, error) {
	kind, _, _ := uploadKind(program)
	slots := s.rec.Inputs
	evKind := EventInputUploaded
	if program {
		slots, evKind = s.rec.Programs, EventProgramUploaded
	}
	slots[name] = slot
	s.rec.Events = append(s.rec.Events, eventRecord{Kind: evKind, Principal: slot.Principal, Name: name, Time: now})
	entry := s.n.stage(s.rec, len(s.rec.Events)-1, LedgerKindSessionEvent, map[string]any{
		"session": s.id, "policy_hash": hex.EncodeToString(s.hash[:]), "principal": slot.Principal,
		"name": name, "envelope_sha256": slot.EnvelopeSHA256, "signature": auth.Signature,
		"unix_ms": auth.UnixMs, "nonce": auth.Nonce,
	})
	ready := s.complete()
	if ready {
		s.rec.State = stateRunning
		s.abandonAll() // nothing more can be uploaded
	}
	if err := s.n.store.save(s.rec, true); err != nil {
		delete(slots, name)
		s.rec.Events = s.rec.Events[:len(s.rec.Events)-1]
		s.rec.State = stateProvisioning
		s.n.admit.release(s.creator, 0, size)
		return nil, storeError(err)
	}
	s.stored += size
	s.queue(len(s.rec.Events)-1, entry, false)
	s.n.log.Info("upload accepted", "session", s.id, "kind", kind, "name", name, "principal", slot.Principal, "envelope_sha256", slot.EnvelopeSHA256)
	if ready {
		s.startRun()
	}
	// The ledger index is not known yet (status shows it): 0.
	return &cloisterv1.UploadResponse{EnvelopeSha256: slot.EnvelopeSHA256, State: apiState(s.rec.State)}, nil
}

// complete reports whether every program and input is present.
func (s *session) complete() bool {
	for _, p := range s.pol.Programs {
		if s.rec.Programs[p.Name] == nil && p.Sealed == nil { // sealed programs are fetched at the run
			return false
		}
	}
	for _, in := range s.pol.Inputs {
		if s.rec.Inputs[in.Name] == nil && !in.Stored() { // stored inputs are fetched at the run
			return false
		}
	}
	return true
}

// queue puts the entry of s.rec.Events[i] (staged by Node.stage before
// the save that committed the step) on the event log, and notes the index
// the log gives it. The entry is appended in the background, after the
// session's earlier ones: a step does not wait for a ledger block (with a
// ledger that commits each entry in a block of its own, that cost a block's
// latency and CPU per step), and entries of concurrent sessions share
// blocks. Status waits for pending entries before it answers, so it shows
// every committed step's index. Recording only after the commit means the
// log never shows a step the node does not have; with a NumberedEventLog
// the entry was saved with the step, so an entry still queued when the
// node is killed is recorded at the next start (restoreOne), once.
// i < 0: no event to note the index in. Callers hold s.mu.
func (s *session) queue(i int, e *stagedEntry, closes bool) {
	s.queueJob(recordJob{event: i, entry: e, closes: closes})
}

func (s *session) queueJob(job recordJob) {
	if job.entry == nil {
		return
	}
	s.recMu.Lock()
	defer s.recMu.Unlock()
	s.recQueue = append(s.recQueue, job)
	if s.recDrained == nil {
		s.recDrained = make(chan struct{})
		s.n.recActive.Add(1)
		go s.recordLoop()
	}
}

// recordLoop appends the queued entries one after the other, notes each
// index, and ends when the queue is empty.
func (s *session) recordLoop() {
	defer s.n.recActive.Add(-1)
	for {
		s.recMu.Lock()
		if len(s.recQueue) == 0 {
			s.recBusy = 0 // the last job's index is noted
			close(s.recDrained)
			s.recDrained = nil
			s.recMu.Unlock()
			return
		}
		job := s.recQueue[0]
		s.recQueue = s.recQueue[1:]
		stalled := s.recFailed && job.entry.Number != 0
		s.recBusy = job.event + 1
		s.recMu.Unlock()
		if stalled {
			// An earlier entry is left to the next start: this one (saved
			// with its step) follows it then, so that the log keeps the
			// order of the steps.
			continue
		}
		idx, err := s.n.recordEntry(s.id, job.entry)
		if errors.Is(err, ErrNumberTaken) && s.n.renumber(&s.mu, job.entry) {
			idx, err = s.n.recordEntry(s.id, job.entry)
		}
		done := entryDone(err)
		s.recMu.Lock()
		s.recFailed = s.recFailed || !done
		failed := s.recFailed
		s.recMu.Unlock()
		if job.closes && !failed {
			if err := s.n.store.markRecorded(s.id); err != nil {
				s.n.log.Warn("noting a closed session's entries as recorded", "session", s.id, "err", err)
			}
		}
		if job.event < 0 {
			continue
		}
		// Noted in memory only: the next step's save writes it. (Saving
		// the record from here could write a state the session holds in
		// memory but deliberately not on disk, such as a run whose result
		// could not be stored and which must run again after a restart.)
		s.mu.Lock()
		if s.rec.State != stateClosed && job.event < len(s.rec.Events) {
			ev := &s.rec.Events[job.event]
			if idx != 0 {
				ev.LedgerIndex = idx
			}
			if done && ev.Entry == job.entry {
				ev.Entry = nil
			}
		}
		s.mu.Unlock()
		if job.persist != nil && !failed {
			s.persistConfirmed(job.persist)
		}
	}
}

// queueStaged queues the entries a restored session's state holds that the
// log had not confirmed, in step order (restore, before any new step).
func (s *session) queueStaged() {
	last := -1
	for i := range s.rec.Events {
		if s.rec.Events[i].Entry != nil {
			last = i
		}
	}
	var persist *restoredState
	if s.rec.State != stateRunning { // a running one saves at the run's end
		persist = &restoredState{state: s.rec.State, events: len(s.rec.Events)}
	}
	for i := 0; i <= last; i++ {
		if e := s.rec.Events[i].Entry; e != nil {
			job := recordJob{event: i, entry: e}
			if i == last {
				job.persist = persist
			}
			s.queueJob(job)
		}
	}
}

// persistConfirmed saves, without an fsync, a restored session whose
// entries the log has now all confirmed (recordJob.persist), if it has
// taken no step since it was restored: every step adds an event.
func (s *session) persistConfirmed(at *restoredState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rec.State != at.state || len(s.rec.Events) != at.events {
		return // a step saved it (or closed it) since
	}
	if err := s.n.store.save(s.rec, false); err != nil {
		s.n.log.Warn("saving confirmed ledger entries", "session", s.id, "err", err)
	}
}

// pendingEntries returns the entries of s's events the log has not
// confirmed, for the tombstone. Callers hold s.mu.
func (s *session) pendingEntries() []stagedEntry {
	var out []stagedEntry
	for _, ev := range s.rec.Events {
		if ev.Entry != nil {
			out = append(out, *ev.Entry)
		}
	}
	return out
}

// awaitRecords waits, up to recordTimeout, until the entries queued so far
// are on the event log (or failed).
func (s *session) awaitRecords(ctx context.Context) {
	s.recMu.Lock()
	drained := s.recDrained
	s.recMu.Unlock()
	if drained == nil {
		return
	}
	t := time.NewTimer(recordTimeout)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
	case <-ctx.Done():
	case <-s.n.baseCtx.Done():
	}
}

// awaitRecorded waits, at most recordTimeout, until the entry of event i
// and those before it have left the queue: appended to the event log, or
// failed (logged). It reports whether event i's entry is on the log (or
// the session has no event log, or the entry was there already).
func (s *session) awaitRecorded(ctx context.Context, i int) (bool, error) {
	t := time.NewTimer(recordTimeout)
	defer t.Stop()
	for {
		s.recMu.Lock()
		pending := s.recBusy > 0 && s.recBusy-1 <= i
		for _, j := range s.recQueue {
			pending = pending || j.event >= 0 && j.event <= i
		}
		s.recMu.Unlock()
		if !pending {
			break
		}
		select {
		case <-time.After(2 * time.Millisecond):
		case <-t.C:
			return false, fmt.Errorf("the ledger entry of the session's %s was not appended within %s", s.eventKind(i), recordTimeout)
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n.events == nil || i >= len(s.rec.Events) {
		return true, nil
	}
	ev := s.rec.Events[i]
	return ev.LedgerIndex != 0 || ev.Entry == nil, nil
}

func (s *session) eventKind(i int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < len(s.rec.Events) {
		return s.rec.Events[i].Kind
	}
	return fmt.Sprintf("event %d", i)
}

// startRun runs the session in the background. Callers hold s.mu and have
// set the state to running.
func (s *session) startRun() {
	ctx, cancel := context.WithCancel(s.n.baseCtx)
	s.cancel = cancel
	s.n.wg.Add(1)
	go func() {
		defer s.n.wg.Done()
		defer cancel()
		s.execute(ctx)
	}()
}

func (s *session) execute(ctx context.Context) {
	// Whatever happens, nothing kept from the uploads outlives the attempt.
	defer s.core.wipe()
	start := time.Now()
	spec, err := s.runSpec(ctx)
	defer spec.lease.release()
	var out *runOutcome
	if err == nil {
		select {
		case s.n.runSlots <- struct{}{}:
			s.n.metrics.workerStart.Inc()
			out, err = s.core.run(ctx, s.n.runner, spec)
			<-s.n.runSlots
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err == nil && s.n.settle != nil && len(s.pol.HostCalls) > 0 && out.report.Outcome == "exited" && out.report.ExitCode == 0 {
		if serr := s.n.settle(ctx, RunInfo{Session: s.id, Policy: s.pol, PolicyHash: s.pol.Hash()}); serr != nil {
			out.removeStreamed(spec.sink)
			err = fmt.Errorf("its host calls did not settle, so no output is released: %w", serr)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rec.State != stateRunning {
		if out != nil {
			out.removeStreamed(spec.sink) // closed meanwhile: nothing is kept
		}
		return
	}
	now := s.n.now()
	if ctx.Err() != nil && s.n.baseCtx.Err() != nil {
		// The node stopped before the run ended (Close after Drain's
		// grace): the run is recorded as interrupted and the record
		// stays "running", so that the next start runs it again.
		s.rec.Events = append(s.rec.Events, eventRecord{Kind: EventRunInterrupted, Time: now})
		entry := s.n.stage(s.rec, len(s.rec.Events)-1, LedgerKindSessionEvent, map[string]any{"session": s.id, "policy_hash": hex.EncodeToString(s.hash[:])})
		if err := s.n.store.save(s.rec, true); err != nil {
			// Still "running" on disk: the next start runs it again all the same.
			s.rec.Events = s.rec.Events[:len(s.rec.Events)-1]
			s.n.log.Error("saving an interrupted run", "session", s.id, "err", err)
			return
		}
		s.queue(len(s.rec.Events)-1, entry, false)
		s.n.metrics.runEnded("interrupted", runOutcomeOf(out))
		s.n.log.Warn("run interrupted by the node's stop; it runs again at the next start", "session", s.id, "ms", time.Since(start).Milliseconds())
		return
	}
	reason := ""
	switch {
	case err != nil:
		reason = "run failed: " + err.Error()
	case out.report.Outcome != "exited":
		reason = fmt.Sprintf("program ended by %s: %s", out.report.Outcome, out.report.Error)
	case out.report.ExitCode != 0:
		reason = fmt.Sprintf("program exited with status %d", out.report.ExitCode)
	}
	if out != nil {
		rep := out.report
		s.rec.Report = &rep
	}
	var outBytes int64
	if reason == "" {
		for name, byReader := range out.sealed {
			or := &outputRecord{Envelopes: map[string]string{}, Inline: map[string][]byte{}}
			for rd, env := range byReader {
				outBytes += int64(len(env))
				sha, inline, perr := s.n.store.putEnvelope(s.id, env)
				if perr != nil {
					reason = "storing sealed output: " + perr.Error()
					break
				}
				or.Envelopes[rd] = sha
				if inline != nil {
					or.Inline[rd] = inline
				}
			}
			s.rec.Outputs[name] = or
		}
		for name, so := range out.streamed {
			or := &outputRecord{Envelopes: map[string]string{}, Stream: so}
			for rd := range so.KeyEnvelopes {
				or.Envelopes[rd] = so.manifestSHA256(rd)
			}
			outBytes += so.Size
			s.rec.Outputs[name] = or
		}
	}
	if reason != "" {
		s.rec.State, s.rec.Reason = stateFailed, reason
		s.rec.Outputs = map[string]*outputRecord{}
		if out != nil {
			out.removeStreamed(spec.sink)
		}
	} else {
		s.rec.State = stateFinished
		if len(out.missing) > 0 {
			s.rec.Reason = fmt.Sprintf("the program did not write %v", out.missing)
		}
	}
	s.rec.Events = append(s.rec.Events, eventRecord{Kind: EventRunFinished, Time: now})
	endEvent := len(s.rec.Events) - 1
	entry := s.stageRunEnd(out)
	var replicaEntry *stagedEntry
	if s.rec.Replica != nil && out != nil && out.replicaDigest != "" {
		replicaEntry = s.stageReplicaResult(out.replicaDigest)
	}
	if err := s.n.store.save(s.rec, true); err != nil {
		// A result is served only once it is on disk: served first, it
		// could be replaced after a crash by another run's (the state on
		// disk still says running, so the next start runs it again).
		s.n.log.Error("saving finished session", "session", s.id, "err", err)
		s.rec.Events = s.rec.Events[:endEvent]
		s.rec.State = stateFailed
		s.rec.Reason = fmt.Sprintf("the run ended but its outcome could not be stored (%v); it runs again at the node's next start", err)
		s.rec.Outputs = map[string]*outputRecord{}
		s.n.metrics.runEnded("unstored", runOutcomeOf(out))
		s.markDone()
		return
	}
	if s.rec.State == stateFinished {
		// Outputs are within the policy's max_output per reader, admitted
		// with the policy: counted, not refused.
		s.n.admit.addBytes(s.creator, outBytes, true, now)
		s.stored += outBytes
	}
	s.queue(endEvent, entry, false)
	if replicaEntry != nil {
		s.queue(len(s.rec.Events)-1, replicaEntry, false)
		s.watchReplicas(s.rec.Replica.Set, replicaWatchBound)
	}
	s.n.metrics.runEnded(s.rec.State, runOutcomeOf(out))
	s.n.log.Info("run ended", "session", s.id, "state", s.rec.State, "reason", s.rec.Reason, "ms", time.Since(start).Milliseconds())
	s.markDone()
}

// runOutcomeOf is the isolate's outcome of a run, "" if there is none.
func runOutcomeOf(out *runOutcome) string {
	if out == nil {
		return ""
	}
	return string(out.report.Outcome)
}

// stageRunEnd stages the entry of the event that ends a run, the last: a
// finished run is a result.committed entry (protocol.ResultCommitmentMessage,
// checked by client.ResultCommitment: each reader's envelope hash, signed by
// the session key); a failed
// one is a session.event carrying the outcome and exit status but not the
// reason text, which may quote the program. Callers hold s.mu.
func (s *session) stageRunEnd(out *runOutcome) *stagedEntry {
	i := len(s.rec.Events) - 1
	ph := hex.EncodeToString(s.hash[:])
	if s.rec.State != stateFinished {
		body := map[string]any{"session": s.id, "policy_hash": ph, "state": s.rec.State}
		if out != nil {
			body["outcome"], body["exit_code"] = out.report.Outcome, out.report.ExitCode
		}
		return s.n.stage(s.rec, i, LedgerKindSessionEvent, body)
	}
	outputs := map[string]map[string]string{}
	for name, or := range s.rec.Outputs {
		outputs[name] = maps.Clone(or.Envelopes)
	}
	msg, err := protocol.ResultCommitmentMessage(s.id, ph, outputs)
	if err != nil {
		s.n.log.Error("result commitment", "session", s.id, "err", err)
		return nil
	}
	sig, err := s.core.sign(msg)
	if err != nil {
		s.n.log.Error("signing the result commitment", "session", s.id, "err", err)
		return nil
	}
	return s.n.stage(s.rec, i, LedgerKindResultCommitted, map[string]any{
		"session": s.id, "policy_hash": ph, "outputs": outputs, "session_key": s.core.spki, "signature": sig,
	})
}

// runSpec gathers the sealed program and inputs from the store, and the
// stored inputs from the cache (fetching what it lacks), held in the
// cache until the returned spec's lease is released — also on error.
// Callers do not hold s.mu: the slots are immutable once the session is
// running.
func (s *session) runSpec(ctx context.Context) (runSpec, error) {
	s.mu.Lock()
	rec := s.rec
	s.mu.Unlock()
	mem, timeout, maxOut, err := policyLimits(s.pol)
	if err != nil {
		return runSpec{}, err
	}
	spec := runSpec{memory: mem, timeout: timeout, maxOutput: maxOut, deterministic: s.pol.Deterministic, engine: s.pol.Engine, hostCalls: s.n.runHostCalls(s.id, s.pol),
		lease: &lease{c: s.n.blobs}}
	if rec.Replica != nil {
		spec.replicaSet = rec.Replica.Set
		for _, in := range s.pol.Inputs {
			spec.inputOrder = append(spec.inputOrder, in.Name)
		}
	}
	prog := s.pol.Programs[0]
	spec.programName = prog.Name
	if spec.programSHA256, err = programHash(s.pol, prog.Name); err != nil {
		return spec, err
	}
	if prog.Sealed != nil {
		path, err := s.n.blobs.fetchSealedProgram(ctx, prog.Sealed, spec.lease)
		if err != nil {
			return spec, fmt.Errorf("sealed program %q: %w", prog.Name, err)
		}
		// The brokers' ledger judges the release against the session's
		// session.created entry, which the node appends in the
		// background: a run that starts right after the session was
		// created waits for it, lest the ledger refuse a session it does
		// not know yet.
		if ok, err := s.awaitRecorded(ctx, 0); err != nil {
			return spec, fmt.Errorf("sealed program %q: %w", prog.Name, err)
		} else if !ok {
			return spec, fmt.Errorf("sealed program %q: the session's %s entry is not on the ledger (see the node's log), so no broker can release its key", prog.Name, EventSessionCreated)
		}
		spec.program = sealedItem{name: prog.Name, path: path}
		spec.sealedProgram = &prog
		spec.obtainKey = s.n.obtainProgramKey
		spec.node = s.n.platform.Public().SigningString()
	} else if spec.program, err = s.storedItem(prog.Name, rec.Programs[prog.Name]); err != nil {
		return spec, err
	}
	for _, in := range s.pol.Inputs {
		if in.Stored() {
			files, err := s.n.blobs.fetchInput(ctx, &in, spec.lease)
			if err != nil {
				return spec, fmt.Errorf("input %q: %w", in.Name, err)
			}
			for _, f := range files {
				spec.inputs = append(spec.inputs, sealedItem{name: f.name, path: f.path})
			}
			continue
		}
		item, err := s.storedItem(in.Name, rec.Inputs[in.Name])
		if err != nil {
			return spec, err
		}
		spec.inputs = append(spec.inputs, item)
	}
	if len(spec.inputs) > isolate.MaxInputFiles {
		return spec, fmt.Errorf("%d input files, directories' files included; a run takes at most %d", len(spec.inputs), isolate.MaxInputFiles)
	}
	for _, o := range s.pol.Outputs {
		os := outputSpec{name: o.Name}
		for _, rid := range o.Readers {
			p := principalOf(s.pol, rid)
			if p == nil {
				return spec, fmt.Errorf("output %q: reader %q is not a principal", o.Name, rid)
			}
			key, err := s.view.sealingKey(p)
			if err != nil {
				return spec, fmt.Errorf("output %q: reader %q: %w", o.Name, rid, err)
			}
			os.readers = append(os.readers, reader{id: rid, key: key})
		}
		spec.outputs = append(spec.outputs, os)
	}
	spec.sink = &outputSink{above: s.n.limits.StreamOutputAbove, dir: s.n.store.sessionDir(s.id), sync: s.n.store.sync,
		path: func(sha string) string { return s.n.store.streamFile(s.id, sha) }}
	return spec, nil
}

// storedItem is an uploaded program or input as the run gets it: its
// envelope, or its streamed sealed file.
func (s *session) storedItem(name string, slot *slotRecord) (sealedItem, error) {
	if slot.Stream != nil {
		return sealedItem{name: name, path: s.n.store.streamFile(s.id, slot.Stream.SHA256), stream: slot.Stream}, nil
	}
	env, err := s.n.store.getEnvelope(s.id, slot.EnvelopeSHA256, slot.Inline)
	if err != nil {
		return sealedItem{}, err
	}
	return sealedItem{name: name, envelope: env}, nil
}

// result returns one output sealed to the requesting reader.
// A request that asks to wait is checked (signature, reader) before it
// waits, so that only a reader can hold a long poll open.
func (s *session) result(ctx context.Context, req *cloisterv1.GetResultRequest) (*cloisterv1.GetResultResponse, error) {
	now := s.n.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkLive(now); err != nil {
		return nil, err
	}
	p, err := s.authorize(req.Auth, protocol.OpGetResult, req.Output, nil, now)
	if err != nil {
		return nil, err
	}
	out := findOutput(s.pol, req.Output)
	if out == nil {
		return nil, refused(connect.CodeNotFound, ruleKnownName, "policy %q lists no output named %q (principal %q)", policyName(s.pol), req.Output, p.ID)
	}
	isReader := false
	for _, r := range out.Readers {
		isReader = isReader || r == p.ID
	}
	if !isReader || !hasRole(p, roleResultReader) {
		return nil, refused(connect.CodePermissionDenied, ruleReader, "principal %q is not a reader of output %q (readers: %v)", p.ID, req.Output, out.Readers)
	}
	if req.WaitMs > 0 && !s.terminal() {
		s.mu.Unlock()
		t := time.NewTimer(min(time.Duration(req.WaitMs)*time.Millisecond, maxLongPoll))
		select {
		case <-s.done:
		case <-t.C:
		case <-ctx.Done():
		case <-s.n.baseCtx.Done():
		}
		t.Stop()
		s.mu.Lock()
	}
	switch s.rec.State {
	case stateProvisioning, stateRunning:
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("session %s is %s: no result yet", s.id, s.rec.State))
	case stateFailed:
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("session %s failed: %s", s.id, s.rec.Reason))
	}
	if rep := s.rec.Replica; rep != nil {
		// Nothing leaves a replica before the set agrees on the ledger;
		// the ledger is read without the session's lock.
		r := *rep
		s.mu.Unlock()
		err := s.replicaGate(ctx, r)
		s.mu.Lock()
		if err != nil {
			return nil, err
		}
		if s.rec.State != stateFinished {
			return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("session %s is %s", s.id, s.rec.State))
		}
	}
	or := s.rec.Outputs[req.Output]
	if or == nil || or.Envelopes[p.ID] == "" {
		return nil, refused(connect.CodeNotFound, ruleOutputExists, "the program did not write output %q", req.Output)
	}
	resp := &cloisterv1.GetResultResponse{Report: apiReport(s.rec.Report)}
	if so := or.Stream; so != nil {
		ct, _ := hex.DecodeString(so.SHA256)
		resp.Stream = &cloisterv1.ResultStream{ReadId: s.grantRead(req.Output, p.ID, so), Size: so.Size,
			CiphertextSha256: ct, KeyEnvelope: so.KeyEnvelopes[p.ID], MaxChunk: s.n.limits.MaxChunkBytes}
	} else if resp.Envelope, err = s.n.store.getEnvelope(s.id, or.Envelopes[p.ID], or.Inline[p.ID]); err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	first := true
	for _, f := range or.Fetched {
		first = first && f != p.ID
	}
	if first {
		or.Fetched = append(or.Fetched, p.ID)
		// When it was fetched, not when the (possibly long-polling)
		// request came in: the events stay in time order.
		s.rec.Events = append(s.rec.Events, eventRecord{Kind: EventResultFetched, Principal: p.ID, Name: req.Output, Time: s.n.now()})
		entry := s.n.stage(s.rec, len(s.rec.Events)-1, LedgerKindSessionEvent, map[string]any{
			"session": s.id, "policy_hash": hex.EncodeToString(s.hash[:]), "principal": p.ID, "output": req.Output,
			"envelope_sha256": or.Envelopes[p.ID], "signature": req.Auth.Signature,
		})
		// Who fetched is bookkeeping, not a rule: it need not be on disk
		// before the reader gets the envelope (a crash may forget it; the
		// reader may fetch again anyway), so it costs no fsync.
		if err := s.n.store.save(s.rec, false); err != nil {
			s.n.log.Error("saving fetch", "session", s.id, "err", err)
		}
		s.queue(len(s.rec.Events)-1, entry, false)
	}
	return resp, nil
}

// close erases the session. Any principal of the policy may close, even
// after the policy expired (erasing is always allowed).
func (s *session) close(ctx context.Context, req *cloisterv1.CloseSessionRequest) (*cloisterv1.CloseSessionResponse, error) {
	now := s.n.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rec.State == stateClosed {
		return &cloisterv1.CloseSessionResponse{State: cloisterv1.SessionState_SESSION_STATE_CLOSED}, nil
	}
	if req.Auth == nil || req.Auth.Principal == "" || principalOf(s.pol, req.Auth.Principal) == nil {
		who := ""
		if req.Auth != nil {
			who = req.Auth.Principal
		}
		return nil, refused(connect.CodePermissionDenied, ruleCloser, "%q is not a principal of policy %q; only its principals may close the session", who, policyName(s.pol))
	}
	p, err := s.authorize(req.Auth, protocol.OpClose, "", nil, now)
	if err != nil {
		return nil, err
	}
	if err := s.eraseLocked(now, p.ID, map[string]any{"principal": p.ID, "signature": req.Auth.Signature}); err != nil {
		return nil, err
	}
	s.n.log.Info("session closed", "session", s.id, "principal", p.ID)
	return &cloisterv1.CloseSessionResponse{State: cloisterv1.SessionState_SESSION_STATE_CLOSED}, nil
}

// eraseLocked erases the session: it stops a run in progress, wipes the
// kept plaintexts, records the close in the tombstone (with the entries
// the log has not confirmed, and the session.closed entry, whose body
// gets closing's fields), removes the state and gives back its quota.
// by is who closed it, as status reports. Callers hold s.mu.
func (s *session) eraseLocked(now time.Time, by string, closing map[string]any) error {
	if s.cancel != nil {
		s.cancel()
	}
	s.core.wipe()
	s.abandonAll()
	// The session's state is erased: the entries the log has not confirmed
	// yet, and the close's own, go in the tombstone.
	ts := tombstone{ID: s.id, Closed: now, By: by}
	body := map[string]any{"event": EventSessionClosed, "session": s.id, "policy_hash": hex.EncodeToString(s.hash[:])}
	maps.Copy(body, closing)
	entry := s.n.stage(s.rec, -1, LedgerKindSessionEvent, body)
	if s.n.numbers != nil {
		ts.Entries = s.pendingEntries()
		if entry != nil {
			ts.Entries = append(ts.Entries, *entry)
		}
	}
	if err := s.n.store.erase(s.id, ts); err != nil {
		return storeError(err)
	}
	s.archive(now)
	s.rec.State, s.rec.Reason = stateClosed, fmt.Sprintf("closed by %q", by)
	s.rec.Outputs = map[string]*outputRecord{}
	s.markDone()
	s.queue(-1, entry, true)
	s.n.forget(s.id, ts)
	s.n.admit.release(s.creator, 1, s.stored)
	s.stored = 0
	return nil
}

// storeError is the API error of a failed write to the session store: a
// full file system is said as such (the node refuses new work until space
// returns), anything else is internal.
func storeError(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return refused(connect.CodeResourceExhausted, ruleDiskReserve, "the node's data directory is full (%v); this step is refused until space is freed", err)
	}
	return connect.NewError(connect.CodeInternal, err)
}

// maxLongPoll caps how long one request may wait for a run to end.
const maxLongPoll = 60 * time.Second
