package node

import (
	"fmt"
	"time"
)

// sweepLoop erases, every Quotas.SweepEvery, the sessions whose policy has
// expired (they allow nothing but closing any more) and those that took no
// step for Quotas.SessionIdle, so that nothing a creator forgot holds the
// node's disk and quotas forever. The first sweep comes one period after
// the start (sessions restored from a long stop are not erased before
// anyone could look at them). It runs until the node closes.
func (n *Node) sweepLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.admit.q.SweepEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-n.baseCtx.Done():
			return
		}
		n.sweep(n.now())
		n.compactClosed(false)
	}
}

// sweep erases the sessions expired or idle at now, and returns how many.
func (n *Node) sweep(now time.Time) int {
	n.mu.RLock()
	list := make([]*session, 0, len(n.sessions))
	for _, s := range n.sessions {
		list = append(list, s)
	}
	n.mu.RUnlock()
	swept := 0
	for _, s := range list {
		if n.baseCtx.Err() != nil {
			break
		}
		s.mu.Lock()
		reason, why := s.sweepReason(now, n.admit.q.SessionIdle)
		if reason != "" {
			if err := s.eraseLocked(now, "node: "+why, map[string]any{"reason": reason}); err != nil {
				n.log.Error("sweeping a session", "session", s.id, "reason", reason, "err", err)
			} else {
				swept++
				n.metrics.swept.WithLabelValues(reason).Inc()
				n.log.Info("session swept", "session", s.id, "reason", why)
			}
		}
		s.mu.Unlock()
	}
	return swept
}

// sweepReason says why s is to be erased at now ("expired" or "idle", and
// a sentence), or "" if it is not. Callers hold s.mu.
func (s *session) sweepReason(now time.Time, idle time.Duration) (string, string) {
	switch {
	case s.rec.State == stateClosed:
		return "", ""
	case s.pol.Expired(now):
		return "expired", fmt.Sprintf("policy %q expired at %s", s.pol.Name, s.pol.Expires.UTC().Format(time.RFC3339))
	case s.rec.State == stateRunning:
		return "", "" // a run is not idleness; its end is a step
	}
	last := s.rec.Created
	if k := len(s.rec.Events); k > 0 {
		last = s.rec.Events[k-1].Time
	}
	if d := now.Sub(last); d > idle {
		return "idle", fmt.Sprintf("no step for %s (idle limit %s)", d.Round(time.Second), idle)
	}
	return "", ""
}
