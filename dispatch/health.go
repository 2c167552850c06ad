package dispatch

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/internal/httpguard"
	"github.com/cloisterhq/cloister/internal/httpmetrics"
)

// health answers an orchestrator's probes (docs/operations.md): /healthz
// while the dispatcher serves, /readyz when it could drive a request — its
// ledger answers and is not catching up (every decision it makes is read
// from, and recorded on, that ledger). A verdict is reused for readyTTL,
// so probes from anyone cost at most one ledger call per period.
type health struct {
	d       *Dispatcher
	mu      sync.Mutex
	at      time.Time
	reasons []string
}

const readyTTL = 2 * time.Second

func (h *health) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

func (h *health) readyz(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	if time.Since(h.at) >= readyTTL {
		h.reasons, h.at = h.check(r.Context()), time.Now()
	}
	reasons := h.reasons
	h.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if len(reasons) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(reasons, "\n"))
		return
	}
	fmt.Fprintln(w, "ok")
}

func (h *health) check(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := h.d.o.Ledger.Status(ctx)
	switch {
	case err != nil:
		return []string{"ledger: " + err.Error()}
	case st.CatchingUp:
		return []string{fmt.Sprintf("ledger: the validator serving it is catching up (at height %d)", st.Height)}
	}
	return nil
}

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
