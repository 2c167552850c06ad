package node

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"

	"connectrpc.com/connect"
)

// metrics are the node's counters, served in the Prometheus text format
// on /metrics. They count events, never name sessions or principals.
type metrics struct {
	mu       sync.Mutex
	counters map[string]uint64 // "name{labels}" → value
}

func (m *metrics) inc(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.counters == nil {
		m.counters = map[string]uint64{}
	}
	m.counters[name]++
}

// observe counts one API call's outcome: refusals by rule, other errors by
// code.
func (m *metrics) observe(method string, err error) {
	if err == nil {
		m.inc(fmt.Sprintf(`cloister_requests_total{method=%q,outcome="ok"}`, method))
		return
	}
	var r *refusal
	if errors.As(err, &r) {
		m.inc(fmt.Sprintf(`cloister_refusals_total{rule=%q}`, r.rule))
	}
	m.inc(fmt.Sprintf(`cloister_requests_total{method=%q,outcome=%q}`, method, connect.CodeOf(err).String()))
}

func (n *Node) serveMetrics(w http.ResponseWriter, r *http.Request) {
	n.metrics.mu.Lock()
	names := make([]string, 0, len(n.metrics.counters))
	for k := range n.metrics.counters {
		names = append(names, k)
	}
	sort.Strings(names)
	vals := make([]uint64, len(names))
	for i, k := range names {
		vals[i] = n.metrics.counters[k]
	}
	n.metrics.mu.Unlock()
	n.mu.RLock()
	live, closed := len(n.sessions), len(n.closed)
	n.mu.RUnlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "# TYPE cloister_sessions gauge\ncloister_sessions{state=\"open\"} %d\ncloister_sessions{state=\"closed\"} %d\n", live, closed)
	typed := map[string]bool{}
	for i, k := range names {
		base := k
		for j, c := range k {
			if c == '{' {
				base = k[:j]
				break
			}
		}
		if !typed[base] {
			fmt.Fprintf(w, "# TYPE %s counter\n", base)
			typed[base] = true
		}
		fmt.Fprintf(w, "%s %d\n", k, vals[i])
	}
}
