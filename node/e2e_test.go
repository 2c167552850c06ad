package node_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
)

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestEndToEnd follows protocol 2 over loopback TLS: create, attest,
// provision, run, fetch, close.
func TestEndToEnd(t *testing.T) {
	s := newScenario(t)
	tn, c, as, _ := setup(t, s)
	s.provision(t, as)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := as.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != cloisterv1.SessionState_SESSION_STATE_FINISHED {
		t.Fatalf("state %v, reason %q", st.State, st.Reason)
	}
	got, err := as.Result(ctx, s.dave.key, "result.json")
	if err != nil {
		t.Fatal(err)
	}
	if want := s.output(t, "result.json"); !bytes.Equal(got, want) {
		t.Fatalf("result.json = %q, want %q", got, want)
	}
	st, err = c.Status(ctx, as.ID(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Outputs) != 1 || len(st.Outputs[0].FetchedBy) != 1 || st.Outputs[0].FetchedBy[0] != "dave" {
		t.Fatalf("status outputs %v, want result.json fetched by dave", st.Outputs)
	}
	if st.Report == nil || st.Report.Outcome != "exited" || !st.Report.Deterministic {
		t.Fatalf("report %v", st.Report)
	}
	// The node measured its worker's CPU time, within the wall time on
	// every core (and /proc's 10 ms resolution).
	if cpu := st.Report.CpuMs; cpu == nil || *cpu < 0 || *cpu > st.Report.WallMs*int64(goruntime.NumCPU())+10 {
		t.Fatalf("report cpu_ms %v for a wall time of %d ms", cpu, st.Report.WallMs)
	}
	if err := as.Close(ctx, s.bob.key); err != nil {
		t.Fatal(err)
	}
	st, err = c.Status(ctx, as.ID(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != cloisterv1.SessionState_SESSION_STATE_CLOSED {
		t.Fatalf("after close: state %v", st.State)
	}
	m := scrapeMetrics(t, tn)
	for _, want := range []string{`cloister_runs_total{outcome="exited",state="finished"} 1`, `cloister_worker_starts_total 1`, `cloister_requests_total{method="UploadInput",outcome="ok"} 2`, `cloister_sessions{state="closed"} 1`} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("metrics lack %s:\n%s", want, m)
		}
	}
	for _, want := range []string{"go_gc_heap_live_bytes", "go_gc_heap_goal_bytes", "go_gc_gomemlimit_bytes", "go_memstats_heap_inuse_bytes", "go_goroutines"} {
		if !strings.Contains(m, "\n"+want+" ") {
			t.Errorf("metrics lack the runtime's %s", want)
		}
	}
}
