package dispatch

import (
	"github.com/cloisterhq/cloister/internal/httpguard"
	"github.com/cloisterhq/cloister/internal/httpmetrics"
)

// newMetrics makes the dispatcher's registry: requests by route, the
// listener's connections (ConnStats), and the requests it drives.
func (d *Dispatcher) newMetrics() *httpmetrics.Metrics {
	m := httpmetrics.New(&d.conns)
	count := func(f func() int) func() float64 {
		return func() float64 {
			d.mu.Lock()
			defer d.mu.Unlock()
			return float64(f())
		}
	}
	m.Gauge("cloister_dispatch_open_requests", "Requests this dispatcher drives now.", count(func() int { return len(d.driving) }))
	m.Gauge("cloister_dispatch_tickets", "Requests whose ticket this dispatcher holds (open, or finished and not yet forgotten).", count(func() int { return len(d.tickets) }))
	return m
}

// ConnStats are the counters to give the listener serving Handler
// (httpguard.Listen, NewServer): /metrics exports them.
func (d *Dispatcher) ConnStats() *httpguard.Stats { return &d.conns }
