package node_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/node"
)

// get fetches path from the node over TLS (no pinning: the probes and
// the status are public) and returns the status code and body.
func (tn *testNode) get(t *testing.T, path string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	res, err := hc.Get(tn.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

func (tn *testNode) status(t *testing.T) node.Status {
	t.Helper()
	code, body := tn.get(t, node.StatusPath)
	if code != http.StatusOK {
		t.Fatalf("status: %d %s", code, body)
	}
	var st node.Status
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("status: %v\n%s", err, body)
	}
	return st
}

// Drain lets a run in progress finish while refusing new work; the probes
// say so; the status counts what the node holds.
func TestDrainFinishesRuns(t *testing.T) {
	s := newScenario(t)
	tn := startNode(t, filepath.Join(t.TempDir(), "node"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if code, body := tn.get(t, node.ReadyzPath); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("readyz before: %d %q", code, body)
	}
	wasm := readTestdata(t, "spin.wasm")
	doc := s.sumPolicy(t, tn.platformKey(), "spin.wasm", wasm)
	c := dial(t, tn)
	as := createAttested(ctx, t, c, doc)
	if _, err := c.CreateSession(ctx, doc); err != nil { // a second, left provisioning
		t.Fatal(err)
	}
	s.provisionSum(t, as, "spin.wasm", wasm)
	st := tn.status(t)
	if !st.Ready || st.Sessions.Running != 1 || st.Sessions.Provisioning != 1 || st.IsolateClass != "software" || st.PlatformKey != tn.platformKey() ||
		st.Workers.RunsMax < 1 || st.Disk.FreeBytes <= 0 || st.Disk.SessionBytes <= 0 || st.Ledger.Mode != "none" {
		t.Fatalf("status while running: %+v", st)
	}

	drained := make(chan int, 1)
	go func() { drained <- tn.Drain(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !tn.Draining() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	code, body := tn.get(t, node.ReadyzPath)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Fatalf("readyz while draining: %d %q", code, body)
	}
	if code, _ := tn.get(t, node.HealthzPath); code != http.StatusOK {
		t.Fatalf("healthz while draining: %d", code)
	}
	_, err := c.CreateSession(ctx, doc)
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("create while draining: %v", err)
	}
	if left := <-drained; left != 0 {
		t.Fatalf("Drain left %d runs", left)
	}
	got, err := as.Result(ctx, s.dave.key, "sum")
	if err != nil {
		t.Fatalf("result after the drain: %v", err)
	}
	if want := "3051657984\n"; string(got) != want { // spin.c's sum
		t.Fatalf("sum = %q, want %q", got, want)
	}
	if st := tn.status(t); st.Ready || !st.Draining || st.Sessions.Finished != 1 || st.Sessions.Running != 0 {
		t.Fatalf("status after the drain: %+v", st)
	}
}

// A run the grace does not cover is recorded as interrupted at the stop
// and run again at the next start.
func TestDrainGraceInterruptsRun(t *testing.T) {
	s := newScenario(t)
	dir := filepath.Join(t.TempDir(), "node")
	tn := startNode(t, dir, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	wasm := readTestdata(t, "spin.wasm")
	doc := s.sumPolicy(t, tn.platformKey(), "spin.wasm", wasm)
	as := createAttested(ctx, t, dial(t, tn), doc)
	s.provisionSum(t, as, "spin.wasm", wasm)
	gctx, gcancel := context.WithTimeout(ctx, 50*time.Millisecond)
	left := tn.Drain(gctx)
	gcancel()
	if left != 1 {
		t.Fatalf("Drain with a 50 ms grace left %d runs, want 1 (spin.wasm runs for seconds)", left)
	}
	as.CloseIdleConnections()
	tn.stop()

	tn2 := startNode(t, dir, nil)
	as2, err := dial(t, tn2).Attest(ctx, as.ID(), mustParse(t, doc))
	if err != nil {
		t.Fatal(err)
	}
	defer as2.CloseIdleConnections()
	st, err := as2.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range st.Events {
		kinds = append(kinds, e.Kind)
	}
	i := slices.Index(kinds, node.EventRunInterrupted)
	if st.State != cloisterv1.SessionState_SESSION_STATE_FINISHED || i < 0 || i+1 >= len(kinds) || kinds[i+1] != node.EventRunRestarted {
		t.Fatalf("after the restart: %v %v (%s)", st.State, kinds, st.Reason)
	}
}
