package session

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/internal/workerbuild"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/policy"
)

// workerBinary is the lean worker (cmd/cloister-isolate, built once by
// TestMain), what an installed node uses.
var workerBinary string

func TestMain(m *testing.M) {
	if isolate.IsWorker() {
		os.Exit(isolate.WorkerMain())
	}
	if os.Getenv(clientsEnv) != "" {
		os.Exit(clientsMain(os.Getenv(clientsEnv)))
	}
	// The GC target and memory limit `cloister node` runs with.
	node.ConfigureGC(node.DefaultMemoryLimit)
	var err error
	if workerBinary, err = workerbuild.Build(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	workerbuild.Cleanup()
	os.Exit(code)
}

// fixture is a node on loopback and the four parties of the sum program.
type fixture struct {
	n       *node.Node
	c       *client.Client
	doc     []byte
	pol     *policy.Policy
	wasm    []byte
	parties map[string]*keys.PrivateKey
	rt      *isolate.Runtime
	url     string // the node's
	phases  phases
}

func newFixture(tb testing.TB, sync bool, warm int) *fixture {
	return newFixtureWith(tb, sync, warm, workerBinary, false)
}

// newFixtureWith starts workers from worker (isolate.WorkerBinarySelf: this
// test binary re-executed) and, withLedger, has the node record every step
// on an embedded single-validator ledger, as `cloister node` does by
// default.
func newFixtureWith(tb testing.TB, sync bool, warm int, worker string, withLedger bool) *fixture {
	tb.Helper()
	wasm, err := os.ReadFile(filepath.Join("testdata", "sum.wasm"))
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	rt, err := isolate.New(context.Background(), isolate.Options{DataDir: dir, WarmWorkers: warm, WorkerBinary: worker})
	if err != nil {
		tb.Fatal(err)
	}
	// The benchmark measures throughput, not admission: every session comes
	// from one address, so the per-creator quotas are lifted.
	opts := node.Options{DataDir: filepath.Join(dir, "node"), Runner: rt, NoSync: !sync,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Admission: node.Admission{Quotas: node.Quotas{CreateRate: 1e6, CreateRatePerCreator: 1e6, MaxSessions: 1 << 20, MaxSessionsPerCreator: 1 << 20}}}
	if withLedger {
		e, err := ledger.OpenEmbedded(context.Background(), filepath.Join(dir, "ledger"), ledger.EmbeddedOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { e.Close() }) // after the node's (cleanups run last first)
		opts.Ledger, opts.LedgerName = e, ledger.Origin(e.ChainID())
	}
	n, err := node.New(context.Background(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go n.Serve(ln)
	f := &fixture{n: n, wasm: wasm, rt: rt, parties: map[string]*keys.PrivateKey{}, url: "https://" + ln.Addr().String()}
	tb.Cleanup(func() { n.Close(); rt.Close() })
	for _, id := range []string{"alice", "bob", "carol", "dave"} {
		if f.parties[id], err = keys.Generate(); err != nil {
			tb.Fatal(err)
		}
	}
	f.doc = benchPolicy(wasm, f.parties, n.PlatformKey())
	if f.pol, err = policy.Parse(f.doc); err != nil {
		tb.Fatal(err)
	}
	if f.c, err = client.Dial(context.Background(), f.url, client.WithPlatformKeys(n.PlatformKey())); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(f.c.Close)
	return f
}

// benchPolicy is the policy of the sum program: alice provides it, bob and
// carol one input each, dave reads the sum.
func benchPolicy(wasm []byte, parties map[string]*keys.PrivateKey, platform ed25519.PublicKey) []byte {
	pr := func(id, role string) map[string]any {
		pub := parties[id].Public()
		return map[string]any{"id": id, "signing_key": pub.SigningString(), "sealing_key": pub.SealingString(), "roles": []string{role}}
	}
	sum := sha256.Sum256(wasm)
	doc, _ := json.Marshal(map[string]any{
		"version": 1, "name": "bench-sum",
		"principals": []any{pr("alice", "program-provider"), pr("bob", "data-provider"), pr("carol", "data-provider"), pr("dave", "result-reader")},
		"programs":   []any{map[string]any{"name": "sum.wasm", "sha256": hex.EncodeToString(sum[:]), "provider": "alice"}},
		"inputs":     []any{map[string]any{"name": "a", "provider": "bob"}, map[string]any{"name": "b", "provider": "carol"}},
		"outputs":    []any{map[string]any{"name": "sum", "readers": []string{"dave"}}},
		"isolates":   []any{map[string]any{"class": "software", "platform_keys": []string{keys.FormatSigningKey(platform)}}},
		"limits":     map[string]any{"memory": "16MiB", "timeout": "30s", "max_output": "4KiB"},
		"expires":    time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339),
	})
	return doc
}

var inputA, inputB = []byte("hello"), []byte("world")

const wantSum = "1084\n"

// flow runs one whole session as a single client doing every party's part
// (one attestation; each party attesting on its own adds one Attest call
// each, ~1 ms).
func (f *fixture) flow(ctx context.Context) error {
	t0 := time.Now()
	id, err := f.c.CreateSession(ctx, f.doc)
	if err != nil {
		return err
	}
	t1 := time.Now()
	as, err := f.c.Attest(ctx, id, f.pol)
	if err != nil {
		return err
	}
	defer as.CloseIdleConnections()
	t2 := time.Now()
	if _, err := as.UploadProgram(ctx, f.parties["alice"], "sum.wasm", f.wasm); err != nil {
		return err
	}
	if _, err := as.UploadInput(ctx, f.parties["bob"], "a", inputA); err != nil {
		return err
	}
	if _, err := as.UploadInput(ctx, f.parties["carol"], "b", inputB); err != nil {
		return err
	}
	t3 := time.Now()
	got, err := as.Result(ctx, f.parties["dave"], "sum")
	if err != nil {
		return err
	}
	if string(got) != wantSum {
		return fmt.Errorf("sum = %q, want %q", got, wantSum)
	}
	t4 := time.Now()
	err = as.Close(ctx, f.parties["dave"])
	f.phases.add(t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), t4.Sub(t3), time.Since(t4))
	return err
}

// phases accumulates time per step of the flow.
type phases struct {
	mu  sync.Mutex
	n   int
	sum [5]time.Duration
}

var phaseNames = [5]string{"create", "attest", "upload3", "run+fetch", "close"}

func (p *phases) add(d ...time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	for i := range d {
		p.sum[i] += d[i]
	}
}

func (p *phases) report(b *testing.B) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == 0 {
		return
	}
	for i, name := range phaseNames {
		b.ReportMetric(float64(p.sum[i].Microseconds())/1000/float64(p.n), name+"-ms")
	}
}

func (f *fixture) direct(ctx context.Context) error {
	res, err := f.rt.Run(ctx, &isolate.Config{Module: f.wasm, Name: "sum.wasm",
		Inputs: []isolate.Input{{Name: "a", Data: inputA}, {Name: "b", Data: inputB}},
		Memory: 16 << 20, Timeout: 30 * time.Second, MaxOutput: 4096})
	if err != nil {
		return err
	}
	defer res.Close()
	if len(res.Outputs) != 1 {
		return fmt.Errorf("direct run: %+v", res.Report)
	}
	if b, err := res.Outputs[0].Bytes(); err != nil || string(b) != wantSum {
		return fmt.Errorf("direct run: %+v (%v)", res.Report, err)
	}
	return nil
}

// timed runs op b.N times (par at a time) and reports p50, p99 and
// operations per second.
func timed(b *testing.B, par int, op func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := op(ctx); err != nil { // warm: compile cache, pools
		b.Fatal(err)
	}
	b.ResetTimer()
	self0, children0 := cpuTimes()
	machine0 := machineBusy()
	lat, el, err := load(ctx, b.N, par, op)
	self1, children1 := cpuTimes()
	machine1 := machineBusy()
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(b.N)/el.Seconds(), "ops/s")
	b.ReportMetric(float64((self1-self0).Microseconds())/1000/float64(b.N), "cpu-node-ms/op")
	b.ReportMetric(float64((children1-children0).Microseconds())/1000/float64(b.N), "cpu-workers-ms/op")
	if machine0 >= 0 && machine1 >= 0 {
		b.ReportMetric(float64((machine1-machine0).Microseconds())/1000/float64(b.N), "cpu-machine-ms/op")
	}
}

// load runs op n times, par at a time, and returns each one's latency
// and the time all took.
func load(ctx context.Context, n, par int, op func(context.Context) error) (lat []time.Duration, el time.Duration, firstErr error) {
	lat = make([]time.Duration, n)
	var mu sync.Mutex
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t0 := time.Now()
				err := op(ctx)
				lat[i] = time.Since(t0)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return lat, time.Since(start), firstErr
}

// machineBusy returns the CPU time every processor of the machine spent
// busy so far (/proc/stat: user, nice, system, irq, softirq), or -1.
// Unlike cpuTimes it includes the kernel's own workers (for example the
// tear-down of a worker's network namespace, which no process is charged
// for) and everything else running on the machine, so it is only
// meaningful on a quiet machine.
func machineBusy() time.Duration {
	busy, _, _ := machineTimes()
	return busy
}

// machineTimes returns, from /proc/stat, the CPU time all processors spent
// busy (as machineBusy) and idle (idle, iowait) so far, and how many
// processors there are; busy is -1 if it cannot be read.
func machineTimes() (busy, idle time.Duration, cpus int) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1, -1, 0
	}
	lines := strings.Split(string(b), "\n")
	f := strings.Fields(lines[0])
	if len(f) < 9 || f[0] != "cpu" {
		return -1, -1, 0
	}
	sum := func(cols ...int) (time.Duration, bool) {
		var ticks int64
		for _, i := range cols {
			v, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				return 0, false
			}
			ticks += v
		}
		return time.Duration(ticks) * time.Second / 100, true // USER_HZ
	}
	var ok1, ok2 bool
	busy, ok1 = sum(1, 2, 3, 6, 7) // user nice system irq softirq
	idle, ok2 = sum(4, 5)          // idle iowait
	if !ok1 || !ok2 {
		return -1, -1, 0
	}
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, "cpu") {
			cpus++
		}
	}
	return busy, idle, cpus
}

// cpuTimes returns the CPU time (user and system) of this process, where
// client and node run, and of its finished children, the isolate workers.
// The machine is shared, so CPU per operation is steadier than wall time.
func cpuTimes() (self, children time.Duration) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	children = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return self, children
}

// BenchmarkSessionFlow: one whole session at a time (latency).
func BenchmarkSessionFlow(b *testing.B) {
	f := newFixture(b, true, 2)
	timed(b, 1, f.flow)
	f.phases.report(b)
}

// BenchmarkSessionFlowNoSync: the same without fsync of session state.
func BenchmarkSessionFlowNoSync(b *testing.B) {
	f := newFixture(b, false, 2)
	timed(b, 1, f.flow)
	f.phases.report(b)
}

// BenchmarkSessionThroughput: 8 sessions in flight (sessions/s).
func BenchmarkSessionThroughput(b *testing.B) {
	f := newFixture(b, true, 4)
	timed(b, 8, f.flow)
}

// BenchmarkSessionFlowLedger: SessionFlow with every step recorded on an
// embedded ledger (each step waits for its entry to commit).
func BenchmarkSessionFlowLedger(b *testing.B) {
	f := newFixtureWith(b, true, 2, workerBinary, true)
	timed(b, 1, f.flow)
	f.phases.report(b)
}

// BenchmarkSessionThroughputLedger: the same with every step recorded on
// an embedded ledger (CometBFT, one validator), as `cloister node` runs by
// default.
func BenchmarkSessionThroughputLedger(b *testing.B) {
	f := newFixtureWith(b, true, 4, workerBinary, true)
	timed(b, 8, f.flow)
}

// BenchmarkIsolateDirect: the same program on the same runtime, no
// protocol (the baseline; `cloister run` does this).
func BenchmarkIsolateDirect(b *testing.B) {
	f := newFixture(b, true, 2)
	timed(b, 1, f.direct)
}

// BenchmarkIsolateDirectSelfWorker: the same with workers that are this
// (large) test binary re-executed, as when no cloister-isolate is
// installed next to cloister.
func BenchmarkIsolateDirectSelfWorker(b *testing.B) {
	f := newFixtureWith(b, true, 2, isolate.WorkerBinarySelf, false)
	timed(b, 1, f.direct)
}

// BenchmarkIsolateDirectThroughput: 8 direct runs in flight.
func BenchmarkIsolateDirectThroughput(b *testing.B) {
	f := newFixture(b, true, 4)
	timed(b, 8, f.direct)
}

// TestFlow keeps the benchmark honest: the flow it measures must work.
func TestFlow(t *testing.T) {
	f := newFixture(t, true, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.flow(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.direct(ctx); err != nil {
		t.Fatal(err)
	}
}
