package node

import (
	"context"
	"encoding/json"
	"errors"
)

// EventLog records session events on a verifiable log. The node records,
// after each step has been committed to its own state, an entry of a
// ledger kind (LedgerKindSessionEvent, whose body names the event in
// "event", or LedgerKindResultCommitted) whose body carries hashes,
// principal ids and signatures only, never data. Options.Ledger plugs a
// ledger in through this seam; without one, status reports index 0 for
// every event, and 0 always means "not recorded" (see Options.Ledger).
type EventLog interface {
	// Record appends one entry and returns its index in the log.
	Record(ctx context.Context, kind string, body any) (index uint64, err error)
}

// NumberedEventLog is an EventLog that takes the node's own number for an
// entry and refuses a second entry with a number it already holds
// (ErrAlreadyRecorded). With one, the node keeps each committed step's
// entry in the step's own saved state until the log confirms it, and after
// a restart records again the entries it has no confirmation of: an entry
// queued when the node was killed is not lost, and one whose confirmation
// was lost is not recorded twice. The ledger is one (its entries' nonces).
type NumberedEventLog interface {
	EventLog
	// RecordNumbered appends one entry, body being its JSON, under the
	// node's number for it.
	RecordNumbered(ctx context.Context, kind string, body json.RawMessage, number uint64) (index uint64, err error)
}

// ErrAlreadyRecorded reports that the log already holds an entry with this
// number: an earlier attempt was recorded.
var ErrAlreadyRecorded = errors.New("event log: an entry with this number is already recorded")

// ErrNumberTaken reports that the log holds a different entry under this
// number (numbers were reused, e.g. an older copy of the data directory was
// restored): the node gives the entry a new number and sends it again.
var ErrNumberTaken = errors.New("event log: this number is held by a different entry")

// ErrRefused wraps a refusal that trying again cannot change (the entry is
// malformed, badly signed or not this node's to make); the node then drops
// the entry. Other failures (the log is down, slow, or lacks an entry this
// one refers to, not recorded yet) leave it to be recorded again at the
// next start.
var ErrRefused = errors.New("event log: entry refused")

// Ledger kinds of the entries the node records.
const (
	LedgerKindSessionEvent    = "session.event"
	LedgerKindResultCommitted = "result.committed"
)

// Event kinds the node records.
const (
	EventSessionCreated  = "session.created"
	EventProgramUploaded = "session.program_uploaded"
	EventInputUploaded   = "session.input_uploaded"
	EventRunInterrupted  = "session.run_interrupted"
	EventRunRestarted    = "session.run_restarted"
	EventRunFinished     = "session.run_finished"
	EventResultFetched   = "session.result_fetched"
	EventSessionClosed   = "session.closed"
)
