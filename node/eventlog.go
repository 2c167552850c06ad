package node

import "context"

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
	EventRunRestarted    = "session.run_restarted"
	EventRunFinished     = "session.run_finished"
	EventResultFetched   = "session.result_fetched"
	EventSessionClosed   = "session.closed"
)
