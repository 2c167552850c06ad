package node

import "context"

// EventLog records session events on a verifiable log (the ledger). The
// node records, after each step has been committed to its own state, an
// entry of the given kind whose body carries hashes and signatures only,
// never data. A nil EventLog means the node runs without a ledger; status
// then reports index 0 for every event.
type EventLog interface {
	// Record appends one entry and returns its index in the log.
	Record(ctx context.Context, kind string, body any) (index uint64, err error)
}

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
