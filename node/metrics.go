package node

import (
	"errors"
	"net/http"
	"regexp"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cloisterhq/cloister/internal/httpmetrics"
)

// metrics are the node's Prometheus metrics, served on /metrics from a
// registry of the node's own (several nodes may share a process). They
// count events and sizes, never name sessions or principals.
type metrics struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec // method, outcome (ok or a connect code)
	refusals    *prometheus.CounterVec // rule
	workerStart prometheus.Counter
	runs        *prometheus.CounterVec // state, outcome
	swept       *prometheus.CounterVec // reason
	log         *refusalLog            // the latest refusals, for an observer (view.go)
}

// newMetrics registers the node's metrics; the gauges read n's state when
// scraped.
func newMetrics(n *Node) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(), log: &n.refusals,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cloister_requests_total",
			Help: "API calls by method and outcome (ok, or the error code)."}, []string{"method", "outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cloister_refusals_total",
			Help: "Requests refused, by the rule or limit that refused them."}, []string{"rule"}),
		workerStart: prometheus.NewCounter(prometheus.CounterOpts{Name: "cloister_worker_starts_total",
			Help: "Runs handed to an isolate worker (a worker serves one run)."}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cloister_runs_total",
			Help: "Runs ended, by the session state they left and the isolate's outcome."}, []string{"state", "outcome"}),
		swept: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cloister_sessions_swept_total",
			Help: "Sessions the node erased itself: policy expired, or idle too long."}, []string{"reason"}),
	}
	sessions := func(closed bool) func() float64 {
		return func() float64 {
			n.mu.RLock()
			defer n.mu.RUnlock()
			if closed {
				return float64(n.closed.len())
			}
			return float64(len(n.sessions))
		}
	}
	m.reg.MustRegister(m.requests, m.refusals, m.workerStart, m.runs, m.swept,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cloister_stored_bytes",
			Help: "Bytes the sessions hold on disk (canonical policies, envelopes, outputs), as the quotas count them."},
			func() float64 { return float64(n.admit.storedTotal()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cloister_sessions", Help: "Sessions held (open) and remembered as closed.",
			ConstLabels: prometheus.Labels{"state": "open"}}, sessions(false)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cloister_sessions", Help: "Sessions held (open) and remembered as closed.",
			ConstLabels: prometheus.Labels{"state": "closed"}}, sessions(true)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cloister_requests_inflight_bytes",
			Help: "Bytes of request bodies being read or handled (limit: --max-inflight)."},
			func() float64 { return float64(n.inflight.cur.Load()) }),
	)
	httpmetrics.RegisterConnStats(m.reg, &n.conns)
	// The process's Go runtime: goroutines and the memory statistics, plus
	// the heap live after the last collection and the collector's goal for
	// the next (go_gc_heap_live_bytes, go_gc_heap_goal_bytes), which tell
	// a growing live heap from a collector letting garbage accumulate up
	// to its goal. Several nodes in one process report the same figures.
	m.reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
		collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/(heap/(live|goal)|gogc|gomemlimit):`)})))
	return m
}

// observe counts one API call's outcome: refusals by rule, other errors by
// code.
func (m *metrics) observe(method string, err error) {
	if err == nil {
		m.requests.WithLabelValues(method, "ok").Inc()
		return
	}
	var r *refusal
	if errors.As(err, &r) {
		m.refusals.WithLabelValues(r.rule).Inc()
		if m.log != nil {
			m.log.add(r.rule, method, time.Now())
		}
	}
	m.requests.WithLabelValues(method, connect.CodeOf(err).String()).Inc()
}

// runEnded counts a run by the state it left the session in and the
// isolate's outcome ("" when the run did not get that far).
func (m *metrics) runEnded(state, outcome string) {
	if outcome == "" {
		outcome = "none"
	}
	m.runs.WithLabelValues(state, outcome).Inc()
}

func (n *Node) metricsHandler() http.Handler {
	return promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{})
}
