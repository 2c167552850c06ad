// Package probe answers an orchestrator's probes for the project's servers
// (docs/operations.md): /healthz while the server serves, /readyz from a
// readiness check whose verdict is reused for TTL, so probes from anyone
// cost at most one check per period.
package probe

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/ledger/client"
)

// TTL is how long a readiness verdict is reused.
const TTL = 2 * time.Second

// Healthz answers 200 "ok": the server serves.
func Healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// Ready serves /readyz from Check: 200 "ok" when it finds nothing wrong,
// else 503 with one line per reason.
type Ready struct {
	// Check returns why the server is not ready (none: ready).
	Check func(ctx context.Context) []string

	mu      sync.Mutex
	at      time.Time
	reasons []string
}

// Readyz is the /readyz handler.
func (p *Ready) Readyz(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if time.Since(p.at) >= TTL {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		p.reasons, p.at = p.Check(ctx), time.Now()
		cancel()
	}
	reasons := p.reasons
	p.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if len(reasons) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(reasons, "\n"))
		return
	}
	fmt.Fprintln(w, "ok")
}

// LedgerStatus is a ledger client's status call.
type LedgerStatus interface {
	Status(ctx context.Context) (*client.Status, error)
}

// Ledger is the readiness of a server that reads and records on a ledger:
// it answers and its validator is not catching up.
func Ledger(ctx context.Context, l LedgerStatus) []string {
	st, err := l.Status(ctx)
	switch {
	case err != nil:
		return []string{"ledger: " + err.Error()}
	case st.CatchingUp:
		return []string{fmt.Sprintf("ledger: the validator serving it is catching up (at height %d)", st.Height)}
	}
	return nil
}
