package session

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/policy"
)

// The clients-apart benchmark runs the node in this process and every
// client in a second process (this test binary re-executed with clientsEnv
// naming its configuration), so that the CPU the clients spend — their
// handshakes, sealing, signing and checking evidence, which in use happen
// on the principals' own machines — is measured apart from what serving
// the sessions costs. Both still share the machine's cores.
const clientsEnv = "CLOISTER_BENCH_CLIENTS"

// clientsConfig is what the client process is given.
type clientsConfig struct {
	URL         string            `json:"url"`
	PlatformKey []byte            `json:"platform_key"`
	Policy      json.RawMessage   `json:"policy"`
	Keys        map[string]string `json:"keys"` // party → key file
	N           int               `json:"n"`
	Par         int               `json:"par"`
}

// clientsResult is what it reports once every session has run.
type clientsResult struct {
	Latencies []time.Duration `json:"latencies"`
	Elapsed   time.Duration   `json:"elapsed"`
	CPU       time.Duration   `json:"cpu"` // its own, while the sessions ran
	Err       string          `json:"err,omitempty"`
}

// clientsMain is the client process: it runs one session to warm up, says
// "ready", waits for a line on stdin, runs the sessions and writes a
// clientsResult to stdout.
func clientsMain(path string) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "bench clients:", err); return 1 }
	raw, err := os.ReadFile(path)
	if err != nil {
		return fail(err)
	}
	var cfg clientsConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return fail(err)
	}
	f := &fixture{doc: cfg.Policy, url: cfg.URL, parties: map[string]*keys.PrivateKey{}}
	if f.wasm, err = os.ReadFile(filepath.Join("testdata", "sum.wasm")); err != nil {
		return fail(err)
	}
	for id, k := range cfg.Keys {
		if f.parties[id], err = keys.Parse([]byte(k)); err != nil {
			return fail(err)
		}
	}
	if f.pol, err = policy.Parse(f.doc); err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if f.c, err = client.Dial(ctx, cfg.URL, client.WithPlatformKeys(cfg.PlatformKey)); err != nil {
		return fail(err)
	}
	defer f.c.Close()
	if err := f.flow(ctx); err != nil {
		return fail(err)
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fail(err)
	}
	self0, _ := cpuTimes()
	lat, el, err := load(ctx, cfg.N, cfg.Par, f.flow)
	self1, _ := cpuTimes()
	res := clientsResult{Latencies: lat, Elapsed: el, CPU: self1 - self0}
	if err != nil {
		res.Err = err.Error()
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return fail(err)
	}
	return 0
}

// clientsApart runs n sessions, par at a time, from a client process of
// its own. around, if not nil, is called just before the sessions start and
// again once the process has reported (before it is reaped, so that it is
// not yet among this process's children).
func clientsApart(tb testing.TB, f *fixture, n, par int, around func()) clientsResult {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := clientsConfig{URL: f.url, PlatformKey: f.n.PlatformKey(), Policy: f.doc, Keys: map[string]string{}, N: n, Par: par}
	for id, k := range f.parties {
		m, err := k.Marshal()
		if err != nil {
			tb.Fatal(err)
		}
		cfg.Keys[id] = string(m)
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "clients.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), clientsEnv+"="+path)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	done := false
	defer func() {
		stdin.Close()
		if !done { // failed: do not wait for sessions that may hang
			cmd.Process.Kill()
		}
		cmd.Wait()
	}()
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); err != nil || line != "ready\n" {
		tb.Fatalf("client process: %q, %v", line, err)
	}
	if around != nil {
		around()
	}
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		tb.Fatal(err)
	}
	var res clientsResult
	if err := json.NewDecoder(out).Decode(&res); err != nil {
		tb.Fatalf("client process: %v", err)
	}
	if around != nil {
		around()
	}
	if res.Err != "" {
		tb.Fatal(res.Err)
	}
	if len(res.Latencies) != n {
		tb.Fatalf("client process ran %d sessions, want %d", len(res.Latencies), n)
	}
	done = true
	return res
}

// BenchmarkSessionThroughputClientsApart: SessionThroughput (8 sessions in
// flight, fsync) with the clients in a process of their own. Besides the
// usual figures it reports cpu-clients-ms/op, cpu-serving-ms/op (the
// machine's CPU less the clients': node, workers and kernel) and
// capacity-ops/s, the sessions per second the machine's cores could serve
// at that cost with the clients elsewhere (decision 0031).
func BenchmarkSessionThroughputClientsApart(b *testing.B) {
	f := newFixture(b, true, 4)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.flow(ctx); err != nil { // warm: compile cache, pools
		b.Fatal(err)
	}
	var self0, self1, children0, children1, machine0, machine1, idle0, idle1 time.Duration
	var cpus int
	started := false
	res := clientsApart(b, f, b.N, 8, func() {
		if !started {
			started = true
			b.ResetTimer()
			self0, children0 = cpuTimes()
			machine0, idle0, cpus = machineTimes()
			return
		}
		self1, children1 = cpuTimes()
		machine1, idle1, _ = machineTimes()
		b.StopTimer()
	})
	lat := res.Latencies
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	perOp := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(b.N)/res.Elapsed.Seconds(), "ops/s")
	b.ReportMetric(perOp(self1-self0), "cpu-node-ms/op")
	b.ReportMetric(perOp(children1-children0), "cpu-workers-ms/op")
	b.ReportMetric(perOp(res.CPU), "cpu-clients-ms/op")
	if machine0 >= 0 && machine1 >= 0 {
		machine := machine1 - machine0
		b.ReportMetric(perOp(machine), "cpu-machine-ms/op")
		// The capacity holds only while the cores are saturated: the
		// share of the time they were idle says whether they were.
		if idle := idle1 - idle0; machine+idle > 0 {
			b.ReportMetric(100*float64(idle)/float64(machine+idle), "idle-%")
		}
		if serving := perOp(machine - res.CPU); serving > 0 {
			b.ReportMetric(float64(cpus)*1000/serving, "capacity-ops/s")
			b.ReportMetric(serving, "cpu-serving-ms/op")
		}
	}
}

// TestFlowClientsApart keeps the clients-apart benchmark honest: its
// client process must run whole sessions against the node (the sum each
// fetches is checked) and account for its CPU.
func TestFlowClientsApart(t *testing.T) {
	f := newFixture(t, true, 1)
	res := clientsApart(t, f, 3, 2, nil)
	if res.CPU <= 0 || res.Elapsed <= 0 {
		t.Fatalf("client process reported CPU %v over %v", res.CPU, res.Elapsed)
	}
	for _, l := range res.Latencies {
		if l <= 0 {
			t.Fatalf("latencies %v: a session was not timed", res.Latencies)
		}
	}
}
