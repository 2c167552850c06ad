package node

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	"github.com/cloisterhq/cloister/attest"
)

// Operations: liveness and readiness for an orchestrator, one status
// document for an operator, and a drain before stopping
// (docs/operations.md, decision 0094).

// StatusPath serves the node's Status as JSON; HealthzPath and ReadyzPath
// answer probes with 200 or 503 and a line per check.
const (
	StatusPath  = "/v1/node/status"
	HealthzPath = "/healthz"
	ReadyzPath  = "/readyz"
)

// LedgerState is what the ledger a node records on says of itself (the
// serving validator's unverified view).
type LedgerState struct {
	Origin     string `json:"origin,omitempty"`
	Height     int64  `json:"height"`
	Size       uint64 `json:"size"`
	Peers      int    `json:"peers"`
	CatchingUp bool   `json:"catching_up"`
}

// Status is the node's view of itself, served on StatusPath and shown by
// 'cloister status'. It counts; it never names principals or shows
// policies. Errors are listed only to callers on the node's loopback
// interface (an operator on the host or in the pod); others see their count.
type Status struct {
	Version      string    `json:"version"`
	IsolateClass string    `json:"isolate_class"`
	PlatformKey  string    `json:"platform_key"`
	Started      time.Time `json:"started"`
	Now          time.Time `json:"now"`
	// Ready is what /readyz answers; NotReady says why not.
	Ready    bool     `json:"ready"`
	NotReady []string `json:"not_ready,omitempty"`
	Draining bool     `json:"draining"`
	Ledger   struct {
		// Mode is embedded, external, event-log or none.
		Mode  string       `json:"mode"`
		State *LedgerState `json:"state,omitempty"`
		Error string       `json:"error,omitempty"`
		// Recording is the number of sessions whose entries are being
		// appended now.
		Recording int64 `json:"recording"`
	} `json:"ledger"`
	Sessions struct {
		Provisioning int `json:"provisioning"`
		Running      int `json:"running"`
		Finished     int `json:"finished"`
		Failed       int `json:"failed"`
		Closed       int `json:"closed"` // remembered as closed (tombstones)
	} `json:"sessions"`
	Workers struct {
		// RunsActive runs hold a slot of RunsMax (--max-runs: the CPU
		// count by default); Warm workers are kept started.
		RunsActive int    `json:"runs_active"`
		RunsMax    int    `json:"runs_max"`
		Warm       int    `json:"warm"`
		Binary     string `json:"binary,omitempty"`
	} `json:"workers"`
	Disk struct {
		DataDir        string `json:"data_dir"`
		FreeBytes      int64  `json:"free_bytes"`
		TotalBytes     int64  `json:"total_bytes"`
		SessionBytes   int64  `json:"session_bytes"`
		BlobCacheBytes int64  `json:"blob_cache_bytes"`
	} `json:"disk"`
	// ErrorsLogged counts warnings and errors since the start; Errors are
	// the latest (at most 16), for loopback callers only.
	ErrorsLogged   uint64        `json:"errors_logged"`
	Errors         []LoggedError `json:"errors,omitempty"`
	ErrorsWithheld bool          `json:"errors_withheld,omitempty"`
}

// LoggedError is a warning or error the node logged.
type LoggedError struct {
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Message string    `json:"message"`
	Session string    `json:"session,omitempty"`
	Err     string    `json:"err,omitempty"`
}

// errorRing keeps the latest warnings and errors the node logged.
type errorRing struct {
	mu    sync.Mutex
	buf   [16]LoggedError
	total uint64
}

func (r *errorRing) add(e LoggedError) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf[r.total%uint64(len(r.buf))] = e
	r.total++
}

// latest returns the kept entries, oldest first, and the total count.
func (r *errorRing) latest() ([]LoggedError, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := min(r.total, uint64(len(r.buf)))
	out := make([]LoggedError, 0, n)
	for i := r.total - n; i < r.total; i++ {
		out = append(out, r.buf[i%uint64(len(r.buf))])
	}
	return out, r.total
}

// ringHandler passes records to the node's log handler and keeps its
// warnings and errors in the ring (message, session and error text only).
type ringHandler struct {
	next  slog.Handler
	ring  *errorRing
	attrs []slog.Attr
}

func (h *ringHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.next.Enabled(ctx, l)
}

func (h *ringHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		e := LoggedError{Time: r.Time, Level: r.Level.String(), Message: clip(r.Message)}
		pick := func(a slog.Attr) bool {
			switch a.Key {
			case "session":
				e.Session = clip(a.Value.String())
			case "err":
				e.Err = clip(a.Value.String())
			}
			return true
		}
		for _, a := range h.attrs {
			pick(a)
		}
		r.Attrs(pick)
		h.ring.add(e)
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *ringHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &ringHandler{next: h.next.WithAttrs(as), ring: h.ring, attrs: append(h.attrs[:len(h.attrs):len(h.attrs)], as...)}
}

func (h *ringHandler) WithGroup(name string) slog.Handler {
	return &ringHandler{next: h.next.WithGroup(name), ring: h.ring, attrs: h.attrs}
}

// clip bounds a logged string kept for the status.
func clip(s string) string {
	const max = 512
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// readyTTL is how long a readiness verdict is reused: probes and status
// calls from anyone cost at most one attestation and one ledger call per
// period.
const readyTTL = 2 * time.Second

// readiness caches the latest readiness verdict.
type readiness struct {
	mu      sync.Mutex
	at      time.Time
	reasons []string
	ledger  *LedgerState
	ledErr  string
}

// checkReady reports why the node is not ready (nil: ready): draining;
// its attester does not produce evidence; the ledger it records on does
// not answer or is still catching up.
func (n *Node) checkReady(ctx context.Context) (reasons []string, led *LedgerState, ledErr string) {
	n.ready.mu.Lock()
	defer n.ready.mu.Unlock()
	if time.Since(n.ready.at) >= readyTTL {
		n.ready.reasons, n.ready.ledger, n.ready.ledErr = n.probe(ctx)
		n.ready.at = time.Now()
	}
	reasons = n.ready.reasons
	if n.draining.Load() {
		reasons = append([]string{"draining: the node is stopping and admits no new work"}, reasons...)
	}
	return reasons, n.ready.ledger, n.ready.ledErr
}

func (n *Node) probe(ctx context.Context) (reasons []string, led *LedgerState, ledErr string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var rd [attest.ReportDataSize]byte
	rand.Read(rd[:])
	if ev, err := n.attester.Attest(ctx, rd); err != nil {
		reasons = append(reasons, fmt.Sprintf("attestation: the %s attester fails: %v", n.class, err))
	} else if ev == nil || ev.Class != n.class || len(ev.Data) == 0 {
		reasons = append(reasons, fmt.Sprintf("attestation: the %s attester returned no %s evidence", n.class, n.class))
	}
	if n.opts.LedgerStatus != nil {
		st, err := n.opts.LedgerStatus(ctx)
		switch {
		case err != nil:
			ledErr = err.Error()
			reasons = append(reasons, "ledger: "+ledErr)
		case st.CatchingUp:
			reasons = append(reasons, fmt.Sprintf("ledger: the validator serving it is catching up (at height %d)", st.Height))
		}
		if err == nil {
			led = &st
		}
	}
	return reasons, led, ledErr
}

// Status assembles the node's status. withErrors adds the latest logged
// warnings and errors.
func (n *Node) Status(ctx context.Context, withErrors bool) *Status {
	st := &Status{Version: Version, IsolateClass: string(n.class), PlatformKey: n.platform.Public().SigningString(),
		Started: n.started, Now: n.now(), Draining: n.draining.Load()}
	reasons, led, ledErr := n.checkReady(ctx)
	st.Ready, st.NotReady = len(reasons) == 0, reasons
	switch {
	case n.opts.Ledger != nil && n.opts.LedgerURL != "":
		st.Ledger.Mode = "external"
	case n.opts.Ledger != nil:
		st.Ledger.Mode = "embedded"
	case n.events != nil:
		st.Ledger.Mode = "event-log"
	default:
		st.Ledger.Mode = "none"
	}
	st.Ledger.State, st.Ledger.Error, st.Ledger.Recording = led, ledErr, n.recActive.Load()
	for _, s := range n.sessionList() {
		s.mu.Lock()
		switch s.rec.State {
		case stateProvisioning:
			st.Sessions.Provisioning++
		case stateRunning:
			st.Sessions.Running++
		case stateFinished:
			st.Sessions.Finished++
		case stateFailed:
			st.Sessions.Failed++
		}
		s.mu.Unlock()
	}
	n.mu.RLock()
	st.Sessions.Closed = n.closed.len()
	n.mu.RUnlock()
	st.Workers.RunsActive, st.Workers.RunsMax, st.Workers.Warm = len(n.runSlots), cap(n.runSlots), n.opts.WarmWorkers
	if n.ownsRun != nil {
		st.Workers.Binary, _ = n.ownsRun.WorkerBinary()
	} else {
		st.Workers.Warm = 0
	}
	st.Disk.DataDir = n.opts.DataDir
	var fs unix.Statfs_t
	if unix.Statfs(n.opts.DataDir, &fs) == nil {
		st.Disk.FreeBytes, st.Disk.TotalBytes = int64(fs.Bavail)*int64(fs.Bsize), int64(fs.Blocks)*int64(fs.Bsize)
	}
	st.Disk.SessionBytes = n.admit.storedTotal()
	st.Disk.BlobCacheBytes = n.blobs.usedBytes()
	errs, total := n.errs.latest()
	st.ErrorsLogged = total
	if withErrors {
		st.Errors = errs
	} else {
		st.ErrorsWithheld = total > 0
	}
	return st
}

// sessionList is a snapshot of the open sessions (taken without holding
// any session's lock: steps lock a session, then the node).
func (n *Node) sessionList() []*session {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]*session, 0, len(n.sessions))
	for _, s := range n.sessions {
		out = append(out, s)
	}
	return out
}

// Drain stops admitting work — new sessions and uploads are refused with
// Unavailable, /readyz answers 503 — and waits until no run is in progress
// or ctx ends. Requests for results and status are still served. It
// returns the number of runs still in progress (0 when they all ended).
// Close then interrupts those: each is recorded as interrupted and runs
// again at the next start.
func (n *Node) Drain(ctx context.Context) int {
	n.draining.Store(true)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		running := 0
		for _, s := range n.sessionList() {
			s.mu.Lock()
			if s.rec.State == stateRunning {
				running++
			}
			s.mu.Unlock()
		}
		if running == 0 {
			return 0
		}
		select {
		case <-ctx.Done():
			return running
		case <-t.C:
		}
	}
}

// Draining reports whether Drain was called.
func (n *Node) Draining() bool { return n.draining.Load() }

// errDraining refuses new work while the node drains.
func errDraining(what string) error {
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("the node is shutting down and accepts no %s; try again once it is back (or on another node)", what))
}

// opsHandlers adds the probe and status endpoints to mux.
func (n *Node) opsHandlers(mux *http.ServeMux) {
	mux.HandleFunc("GET "+HealthzPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if n.baseCtx.Err() != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "stopped")
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET "+ReadyzPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		reasons, _, _ := n.checkReady(r.Context())
		if len(reasons) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, strings.Join(reasons, "\n"))
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET "+StatusPath, func(w http.ResponseWriter, r *http.Request) {
		st := n.Status(r.Context(), loopbackPeer(r.RemoteAddr))
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if err := json.NewEncoder(w).Encode(st); err != nil && !errors.Is(err, http.ErrHandlerTimeout) {
			n.log.Debug("writing status", "err", err)
		}
	})
}

// loopbackPeer reports whether a request came from the loopback interface.
func loopbackPeer(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// usedBytes is the bytes the blob cache holds (and is fetching).
func (c *blobCache) usedBytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}
