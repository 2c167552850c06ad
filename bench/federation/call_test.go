// Package federation holds benchmarks of federated calls: the overhead a
// cross-node sub-model call adds over the sub-model's own run (the
// holder's audit, plan and budget, TLS pinned to the ledger's key, the
// signed call, the sealed result, the receipt kept before release), on
// loopback, against the same program run directly in the holder node's
// isolates. Figures are in docs/federation.md and docs/performance.md. It
// contains no production code.
package federation

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/bench/internal/measure"
	"github.com/cloisterhq/cloister/console"
	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/federation"
	"github.com/cloisterhq/cloister/internal/fedexample"
	"github.com/cloisterhq/cloister/internal/fedexample/fedmodel"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/node"
)

var runtime *isolate.Runtime

func TestMain(m *testing.M) {
	if isolate.IsWorker() {
		os.Exit(isolate.WorkerMain())
	}
	dir, err := os.MkdirTemp("", "cloister-bench-federation-")
	if err != nil {
		panic(err)
	}
	runtime, err = isolate.New(context.Background(), isolate.Options{DataDir: dir})
	if err != nil {
		panic(err)
	}
	code := m.Run()
	runtime.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

// rows is the size of the hospital's dataset in the benchmark.
const rows = 200

// BenchmarkCallOverhead measures, on loopback, a call of hospital-a's
// count (200 rows) made by the initiator's node — the holder's audit
// against the ledger, the plan and budget persisted, the sealed result
// and the receipt kept on disk before release (decision 0125) — and the
// same program run directly in the holder node's isolates. It reports the
// p50 and p99 of both, the difference of their p50s, and the p50 and p99
// of each call less the sub-model's run inside it (path-p50-ms, the
// overhead the goal of ≤ 10 ms is about; decision 0167).
func BenchmarkCallOverhead(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tmp := b.TempDir()
	e, err := ledger.OpenEmbedded(ctx, filepath.Join(tmp, "ledger"), ledger.EmbeddedOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	lc, err := console.LedgerClient(e.Handler())
	if err != nil {
		b.Fatal(err)
	}
	key := func() ed25519.PrivateKey {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		return k
	}
	org, init := key(), key()
	pub := func(k ed25519.PrivateKey) string { return protocol.FormatEd25519Key(k.Public().(ed25519.PublicKey)) }
	val, err := ledger.ValidatorKey(filepath.Join(tmp, "ledger"))
	if err != nil {
		b.Fatal(err)
	}
	se, _ := verify.NewEntry(val, ledger.KindMemberAdmitted, map[string]any{"member": pub(org)})
	if _, err := lc.Append(ctx, se); err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hn, err := node.New(ctx, node.Options{DataDir: filepath.Join(tmp, "holder"), Runner: runtime, Ledger: e,
		LedgerName: ledger.Origin(e.ChainID()), Endpoint: "https://" + ln.Addr().String(), Organisation: org.Public().(ed25519.PublicKey), Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	defer hn.Close()
	th := &timedHost{Node: hn}
	sl := &stepLog{steps: map[string]map[string]time.Duration{}, program: func() time.Duration { return time.Duration(th.last.Load()) }}
	h, err := federation.NewHolder(federation.HolderOptions{Dir: filepath.Join(tmp, "holder", "federation"), Host: th, Ledger: lc,
		Organisation: org.Public().(ed25519.PublicKey), Logger: slog.New(sl)})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	h.Mount(hn)
	go hn.Serve(ln)
	caller := &federation.Caller{Ledger: lc, Logger: slog.New(sl)}
	in, err := node.New(ctx, node.Options{DataDir: filepath.Join(tmp, "initiator"), Runner: runtime, Ledger: e,
		LedgerName: ledger.Origin(e.ChainID()), Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	caller.Signer = in

	p, err := examples.Lookup("hospital")
	if err != nil {
		b.Fatal(err)
	}
	data := filepath.Join(tmp, "patients.csv")
	if err := os.WriteFile(data, fedexample.Generate("a", 1, rows), 0o600); err != nil {
		b.Fatal(err)
	}
	admin, err := federation.DialAdmin(ctx, "https://"+ln.Addr().String(), hn.PlatformKey())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := admin.AddDataset(ctx, org, "patients.csv", data); err != nil {
		b.Fatal(err)
	}
	m := fedmodel.Hospital("hospital-a/stats", 1, p.Wasm, []string{protocol.FormatEd25519Key(hn.PlatformKey())}, pub(init))
	if _, err := admin.Publish(ctx, org, &m, p.Wasm); err != nil {
		b.Fatal(err)
	}
	args := json.RawMessage(`{"column":"age","op":">=","value":0}`)
	callJSON, _ := json.Marshal(map[string]any{"function": "count", "args": args})
	direct := func() time.Duration {
		t0 := time.Now()
		res, err := hn.RunProgram(ctx, &isolate.Config{Module: p.Wasm, Name: m.Name, Timeout: 30 * time.Second, MaxOutput: federation.MaxResult, MaxOutputFiles: 1,
			Inputs: []isolate.Input{{Name: "call.json", Data: callJSON}, {Name: "patients.csv", Path: data}}})
		if err != nil || res.Report.ExitCode != 0 {
			b.Fatalf("direct run: %v", err)
		}
		res.Close()
		return time.Since(t0)
	}
	workflow := "0123456789abcdef0123456789abcdef"
	call := func() time.Duration {
		t0 := time.Now()
		if _, err := caller.Call(ctx, federation.Origin{Initiator: pub(init), Workflow: workflow}, &federation.Request{Model: m.Name, Function: "count", Args: args}); err != nil {
			b.Fatalf("call: %v", err)
		}
		return time.Since(t0)
	}
	// Warm both paths: the compiled module, the pinned connection.
	for range 3 {
		direct()
		call()
	}
	var ds, cs, ps []time.Duration
	var dcpu, ccpu time.Duration
	sl.reset()
	b.ResetTimer()
	for b.Loop() {
		c0 := measure.TreeCPU(os.Getpid())
		ds = append(ds, direct())
		c1 := measure.TreeCPU(os.Getpid())
		cs = append(cs, call())
		c2 := measure.TreeCPU(os.Getpid())
		dcpu, ccpu = dcpu+c1-c0, ccpu+c2-c1
		ps = append(ps, cs[len(cs)-1]-time.Duration(th.last.Load()))
	}
	b.StopTimer()
	if err := caller.Settle(ctx, workflow); err != nil {
		b.Fatalf("receipts: %v", err)
	}
	q := func(v []time.Duration, p float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		return float64(s[min(len(s)-1, int(p*float64(len(s))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(ds, 0.5), "direct-p50-ms")
	b.ReportMetric(q(ds, 0.99), "direct-p99-ms")
	b.ReportMetric(q(cs, 0.5), "call-p50-ms")
	b.ReportMetric(q(cs, 0.99), "call-p99-ms")
	b.ReportMetric(q(cs, 0.5)-q(ds, 0.5), "overhead-p50-ms")
	b.ReportMetric(q(ps, 0.5), "path-p50-ms")
	b.ReportMetric(q(ps, 0.99), "path-p99-ms")
	sl.report(b, q)
	n := float64(len(cs))
	b.ReportMetric(float64(dcpu.Microseconds())/1000/n, "direct-cpu-ms/op")
	b.ReportMetric(float64(ccpu.Microseconds())/1000/n, "call-cpu-ms/op")
	b.ReportMetric(0, "ns/op")
	fmt.Fprintf(os.Stderr, "calls %d: direct p50 %.2f ms p99 %.2f ms; call p50 %.2f ms p99 %.2f ms; call less its own run p50 %.2f ms p99 %.2f ms\n",
		len(cs), q(ds, 0.5), q(ds, 0.99), q(cs, 0.5), q(cs, 0.99), q(ps, 0.5), q(ps, 0.99))
}

// timedHost is the holder's node, timing the sub-model's run inside each
// call (RunProgram, from the run slot to the result), so that a call's
// overhead can be read as the call less its own run, pair by pair,
// rather than as a difference of two noisy distributions.
type timedHost struct {
	*node.Node
	last atomic.Int64 // the latest run's, in ns; calls are made one at a time
}

func (t *timedHost) RunProgram(ctx context.Context, cfg *isolate.Config) (*isolate.Result, error) {
	t0 := time.Now()
	res, err := t.Node.RunProgram(ctx, cfg)
	t.last.Store(int64(time.Since(t0)))
	return res, err
}

// stepLog collects the steps of each call as the holder ("call
// answered") and the caller ("call made") log them at debug level, by
// call id, to report where a call's time goes:
//
//	caller-models   the caller's read of the model list from the ledger
//	caller-prepare  its one-time key made and the exact call signed
//	caller-exchange the HTTP/2 request to the holder until its reply is read
//	caller-open     the receipt checked and the result opened
//	holder-read     the holder reading the signed call and checking its signature
//	holder-audit    the call checked: its id, the model list read from the
//	                ledger, the schema, the plans
//	holder-run      the sub-model's run less its time in RunProgram: the
//	                program and datasets found, the result read and checked
//	holder-seal     the result sealed to the caller's key
//	holder-kept     counted, the receipt signed, both durable on disk
//	holder-reply    the reply written
//	transport       caller-exchange less the holder's handler, call by call
//	                (TLS, HTTP/2 framing, the goroutine hand-offs between them)
type stepLog struct {
	program func() time.Duration // the latest sub-model's run (RunProgram)
	mu      sync.Mutex
	steps   map[string]map[string]time.Duration // call -> step -> time
}

func (l *stepLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *stepLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *stepLog) WithGroup(string) slog.Handler            { return l }

func (l *stepLog) Handle(_ context.Context, r slog.Record) error {
	var side string
	switch r.Message {
	case "federation: call answered":
		side = "holder-"
	case "federation: call made":
		side = "caller-"
	default:
		return nil
	}
	var call string
	st := map[string]time.Duration{}
	if side == "holder-" {
		st["holder-program"] = l.program()
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "call" {
			call = a.Value.String()
		} else if k, ok := strings.CutSuffix(a.Key, "_us"); ok && a.Value.Kind() == slog.KindInt64 {
			st[side+k] = time.Duration(a.Value.Int64()) * time.Microsecond
		}
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.steps[call] == nil {
		l.steps[call] = map[string]time.Duration{}
	}
	maps.Copy(l.steps[call], st)
	return nil
}

func (l *stepLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.steps)
}

// report reports the p50 of each step over the calls both sides logged.
func (l *stepLog) report(b *testing.B, q func([]time.Duration, float64) float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	names := []string{"caller-models", "caller-prepare", "caller-exchange", "caller-open",
		"holder-read", "holder-audit", "holder-run", "holder-seal", "holder-kept", "holder-reply", "transport"}
	got := map[string][]time.Duration{}
	for _, st := range l.steps {
		if _, ok := st["holder-total"]; !ok {
			continue
		}
		st["transport"] = st["caller-exchange"] - st["holder-total"]
		st["holder-run"] -= st["holder-program"]
		for _, n := range names {
			got[n] = append(got[n], st[n])
		}
	}
	var line []string
	for _, n := range names {
		if len(got[n]) == 0 {
			continue
		}
		b.ReportMetric(q(got[n], 0.5), n+"-p50-ms")
		line = append(line, fmt.Sprintf("%s %.2f", n, q(got[n], 0.5)))
	}
	fmt.Fprintf(os.Stderr, "steps, p50 ms: %s\n", strings.Join(line, ", "))
}
