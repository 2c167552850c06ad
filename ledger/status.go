package ledger

import (
	"fmt"
	"net/http"
)

type statusJSON struct {
	ChainID        string  `json:"chain_id"`
	Height         int64   `json:"height"`
	Size           uint64  `json:"size"`
	Root           []byte  `json:"root"`
	CheckpointSize *uint64 `json:"checkpoint_size"`
	// RulesVersion is the rule version that judges the next block; Rules
	// the whole schedule, including versions scheduled for later heights.
	RulesVersion int          `json:"rules_version,omitempty"`
	Rules        ruleSchedule `json:"rules,omitempty"`
	// Peers is the number of validators' connections this one holds;
	// CatchingUp is true while it is still fetching blocks others have
	// committed (its state is behind theirs). Both are the serving
	// validator's own, unverified, view.
	Peers      int  `json:"peers"`
	CatchingUp bool `json:"catching_up"`
}

// withRules adds the rule schedule to a status of committed height h.
func (s statusJSON) withRules(sched ruleSchedule, h int64) statusJSON {
	if sched != nil {
		s.Rules, s.RulesVersion = sched, sched.at(h+1)
	}
	return s
}

// liveness is the CometBFT node's view of its peers and of its sync.
func (ln *ledgerNode) liveness() (peers int, catchingUp bool) {
	if sw := ln.node.Switch(); sw != nil {
		peers = sw.Peers().Size()
	}
	if r := ln.node.ConsensusReactor(); r != nil {
		catchingUp = r.WaitSync()
	}
	return peers, catchingUp
}

// Status is a ledger's view of itself, as GET /v1/status serves it.
type Status struct {
	ChainID    string
	Height     int64
	Size       uint64
	Peers      int
	CatchingUp bool
}

// Status returns the embedded ledger's committed height and size. Its one
// validator has no peers and is never catching up once open.
func (e *Embedded) Status() Status {
	st, vs := e.ln.app.state()
	s := Status{Height: st.Height, Size: st.Size}
	if vs != nil {
		s.ChainID = vs.chainID
	}
	s.Peers, s.CatchingUp = e.ln.liveness()
	return s
}

// handleHealthz answers probes: the process serves its API.
func (ln *ledgerNode) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// handleReadyz answers 200 once the validator has committed a block and is
// not catching up with its peers (its reads would be stale), 503 otherwise.
func (ln *ledgerNode) handleReadyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	st, _ := ln.app.state()
	_, catchingUp := ln.liveness()
	switch {
	case catchingUp:
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "catching up: at height %d\n", st.Height)
	case st.Height < 1:
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "no block committed yet")
	default:
		fmt.Fprintln(w, "ok")
	}
}
