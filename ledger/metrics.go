package ledger

import (
	"github.com/cloisterhq/cloister/internal/httpguard"
	"github.com/cloisterhq/cloister/internal/httpmetrics"
)

// validatorMetrics are a validator's Prometheus metrics, served on its API
// listener's GET /metrics: requests by route and status, connections, and
// the committed log as the validator sees it (gauges read when scraped).
func validatorMetrics(ln *ledgerNode, conns *httpguard.Stats) *httpmetrics.Metrics {
	m := httpmetrics.New(conns)
	state := func(f func(committedState) float64) func() float64 {
		return func() float64 {
			st, _ := ln.app.state()
			return f(st)
		}
	}
	m.Gauge("cloister_ledger_height", "Height of the last committed block.",
		state(func(st committedState) float64 { return float64(st.Height) }))
	m.Gauge("cloister_ledger_entries", "Entries in the committed log.",
		state(func(st committedState) float64 { return float64(st.Size) }))
	m.Gauge("cloister_ledger_checkpoint_entries", "Entries the latest cosigned checkpoint covers.",
		state(func(st committedState) float64 { return float64(st.CheckpointSize) }))
	m.Gauge("cloister_ledger_peers", "Peers connected.", func() float64 {
		peers, _ := ln.liveness()
		return float64(peers)
	})
	m.Gauge("cloister_ledger_catching_up", "1 while the validator catches up with its peers.", func() float64 {
		if _, c := ln.liveness(); c {
			return 1
		}
		return 0
	})
	return m
}
