package broker

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/ledger/client"
)

// health answers the probes of an orchestrator (docs/operations.md):
// /healthz while the broker serves, /readyz when it could release a key —
// its attester produces evidence and its ledger answers and is not
// catching up. A verdict is reused for readyTTL, so probes from anyone
// cost at most one attestation and one ledger call per period.
type health struct {
	b       *Broker
	mu      sync.Mutex
	at      time.Time
	reasons []string
}

const readyTTL = 2 * time.Second

// ledgerStatus is what a ledger client offers beyond Ledger: its status.
type ledgerStatus interface {
	Status(ctx context.Context) (*client.Status, error)
}

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
	var reasons []string
	var rd [attest.ReportDataSize]byte
	rand.Read(rd[:])
	if ev, err := h.b.att.Attest(ctx, rd); err != nil || ev == nil || len(ev.Data) == 0 {
		reasons = append(reasons, fmt.Sprintf("attestation: the broker's attester produces no evidence: %v", err))
	}
	switch l := h.b.opts.Ledger.(type) {
	case nil:
		reasons = append(reasons, "ledger: none configured (--ledger): every release is refused")
	case ledgerStatus:
		st, err := l.Status(ctx)
		switch {
		case err != nil:
			reasons = append(reasons, "ledger: "+err.Error())
		case st.CatchingUp:
			reasons = append(reasons, fmt.Sprintf("ledger: the validator serving it is catching up (at height %d)", st.Height))
		}
	}
	return reasons
}
