// Package httpmetrics serves a server's Prometheus metrics on GET /metrics
// from a registry of its own (several servers may share a process), with
// what every HTTP listener of the project counts: requests by route and
// status, and the listener's connection counters (package httpguard).
// Label values come from the server's own route table and status codes,
// never from what a client sends, so the series stay bounded.
package httpmetrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cloisterhq/cloister/internal/httpguard"
)

// Metrics is one server's registry.
type Metrics struct {
	Reg      *prometheus.Registry
	requests *prometheus.CounterVec
}

// New makes a registry with the request counter and, if st is not nil,
// the listener's connection counters.
func New(st *httpguard.Stats) *Metrics {
	m := &Metrics{
		Reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cloister_http_requests_total",
			Help: "HTTP requests by route (the server's pattern, \"other\" for none) and status code."}, []string{"route", "status"}),
	}
	m.Reg.MustRegister(m.requests)
	if st != nil {
		RegisterConnStats(m.Reg, st)
	}
	return m
}

// Gauge registers a gauge read when scraped.
func (m *Metrics) Gauge(name, help string, f func() float64) {
	m.Reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// Serve adds GET /metrics to mux and returns mux with each request counted.
func (m *Metrics) Serve(mux *http.ServeMux) http.Handler {
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Reg, promhttp.HandlerOpts{}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		mux.ServeHTTP(sw, r)
		// The mux sets r.Pattern to the route it chose.
		route := r.Pattern
		if route == "" {
			route = "other"
		}
		m.requests.WithLabelValues(route, strconv.Itoa(sw.status)).Inc()
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// RegisterConnStats exports a listener's httpguard counters.
func RegisterConnStats(reg *prometheus.Registry, st *httpguard.Stats) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cloister_connections_open", Help: "Connections open on the API listener."},
			func() float64 { return float64(st.Open.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cloister_connections_accepted_total", Help: "Connections accepted on the API listener."},
			func() float64 { return float64(st.Accepted.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cloister_connections_refused_total", Help: "Connections closed at accept: too many open.",
			ConstLabels: prometheus.Labels{"limit": "max-conns"}}, func() float64 { return float64(st.RefusedTotal.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cloister_connections_refused_total", Help: "Connections closed at accept: too many open.",
			ConstLabels: prometheus.Labels{"limit": "max-conns-per-addr"}}, func() float64 { return float64(st.RefusedAddr.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cloister_slow_bodies_total", Help: "Request bodies cut off for arriving below the minimum rate."},
			func() float64 { return float64(st.SlowBodies.Load()) }),
	)
}
