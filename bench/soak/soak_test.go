package soak

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/cloister/v1/cloisterv1connect"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/internal/testbin"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/policy"
)

var (
	soakDuration = flag.Duration("soak.duration", 10*time.Minute, "how long the honest load and the hostile traffic run")
	soakWarmup   = flag.Duration("soak.warmup", time.Minute, "resident memory growth is measured from this point on")
	soakRate     = flag.Float64("soak.rate", 21, "honest sessions started per second (open loop, each at its due time); the default is 5 % above the goal of 20/s, since the sessions served per second count the last flows' drain after the starts end")
	soakHostile  = flag.Int("soak.hostile", 50, "hostile connections, each sending one request after another")
	soakCreators = flag.Int("soak.creators", 4, "honest creator keys the sessions are spread over")
	soakMemLimit = flag.String("soak.memory-limit", "", "the node's --memory-limit (empty: the node's default)")
	soakLedger   = flag.String("soak.ledger", "embedded", "where the node records: embedded (its own ledger, in its process) or validator (a one-validator ledger, a process of its own, as a consortium's node would use)")
)

// BenchmarkSoak runs once whatever b.N is; run it with -benchtime 1x.
func BenchmarkSoak(b *testing.B) {
	bin, err := testbin.Cloister()
	if err != nil {
		b.Fatal(err)
	}
	defer testbin.Cleanup()
	wasm, err := os.ReadFile(filepath.Join("..", "session", "testdata", "sum.wasm"))
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	var creators []*keys.PrivateKey
	args := []string{"--data", filepath.Join(dir, "node"), "--listen", "127.0.0.1:0", "--admission", "allow-list", "--log-level", "info"}
	var validator *testbin.Node
	switch *soakLedger {
	case "embedded":
	case "validator":
		if validator, err = testbin.StartValidator(bin, filepath.Join(dir, "ledger"), 2*time.Minute); err != nil {
			b.Fatal(err)
		}
		defer validator.Stop()
		args = append(args, "--ledger", validator.URL)
	default:
		b.Fatalf("-soak.ledger %q: want embedded or validator", *soakLedger)
	}
	if *soakMemLimit != "" {
		args = append(args, "--memory-limit", *soakMemLimit)
	}
	for range *soakCreators {
		k := mustKey(b)
		creators = append(creators, k)
		args = append(args, "--admit-key", k.Public().SigningString())
	}
	np, err := testbin.StartNode(bin, 2*time.Minute, args...)
	if err != nil {
		b.Fatal(err)
	}
	defer np.Stop()
	pk, err := keys.Load(filepath.Join(dir, "node", node.PlatformKeyFile))
	if err != nil {
		b.Fatal(err)
	}
	platform := pk.Public().Signing
	w := newWorld(b, np.URL, platform, wasm, creators)

	ctx, cancel := context.WithTimeout(context.Background(), *soakDuration)
	defer cancel()
	load0 := loadAvg()
	cpu0 := selfCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range *soakHostile {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.hostile(ctx, hostileKinds[i%len(hostileKinds)])
		}()
	}
	samples := make(chan []rssSample, 1)
	go func() { samples <- sampleRSS(ctx, "node", np.Cmd.Process.Pid, np.URL+"/metrics", start, w, b) }()
	vsamples := make(chan []rssSample, 1)
	if validator != nil {
		go func() { vsamples <- sampleRSS(ctx, "validator", validator.Cmd.Process.Pid, "", start, w, b) }()
	}
	w.honest(ctx)
	wg.Wait()
	elapsed := time.Since(start)
	series := <-samples
	var vseries []rssSample
	if validator != nil {
		vseries = <-vsamples
	}
	load1 := loadAvg()
	w.clientCPU = selfCPU() - cpu0
	w.report(b, elapsed, series, vseries, load0, load1)
}

// world is the honest parties, their policy, and what happened.
type world struct {
	url      string
	platform ed25519.PublicKey
	wasm     []byte
	doc      []byte
	pol      *policy.Policy
	alice    *keys.PrivateKey // program provider
	bob      *keys.PrivateKey // input a
	carol    *keys.PrivateKey // input b
	dave     *keys.PrivateKey // reader
	clients  []*client.Client
	want     []byte

	mu        sync.Mutex
	latencies []time.Duration // whole flows, after the warm-up
	done      atomic.Int64
	started   atomic.Int64
	behind    atomic.Int64 // starts skipped: too many flows in flight
	corrupted atomic.Int64
	errs      map[string]int
	example   map[string]string         // the first error of each class, whole
	clientCPU time.Duration             // this process's: the clients, honest and hostile
	hostileBy map[string]map[string]int // kind → outcome → count
}

func mustKey(b *testing.B) *keys.PrivateKey {
	k, err := keys.Generate()
	if err != nil {
		b.Fatal(err)
	}
	return k
}

func newWorld(b *testing.B, url string, platform ed25519.PublicKey, wasm []byte, creators []*keys.PrivateKey) *world {
	w := &world{url: url, platform: platform, wasm: wasm, alice: mustKey(b), bob: mustKey(b), carol: mustKey(b), dave: mustKey(b),
		errs: map[string]int{}, example: map[string]string{}, hostileBy: map[string]map[string]int{}}
	p := func(id string, k *keys.PrivateKey, role string) map[string]any {
		return map[string]any{"id": id, "signing_key": k.Public().SigningString(), "sealing_key": k.Public().SealingString(), "roles": []string{role}}
	}
	sum := sha256.Sum256(wasm)
	w.doc, _ = json.Marshal(map[string]any{
		"version": 1, "name": "soak",
		"principals": []any{p("alice", w.alice, "program-provider"), p("bob", w.bob, "data-provider"), p("carol", w.carol, "data-provider"), p("dave", w.dave, "result-reader")},
		"programs":   []any{map[string]any{"name": "sum.wasm", "sha256": hex.EncodeToString(sum[:]), "provider": "alice"}},
		"inputs":     []any{map[string]any{"name": "a", "provider": "bob"}, map[string]any{"name": "b", "provider": "carol"}},
		"outputs":    []any{map[string]any{"name": "sum", "readers": []string{"dave"}}},
		"isolates":   []any{map[string]any{"class": "software", "platform_keys": []string{keys.FormatSigningKey(platform)}}},
		"limits":     map[string]any{"memory": "16MiB", "timeout": "60s", "max_output": "4KiB"},
		"expires":    time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339),
	})
	var err error
	if w.pol, err = policy.Parse(w.doc); err != nil {
		b.Fatal(err)
	}
	total := 0
	for _, c := range []byte("hello" + "world") {
		total += int(c)
	}
	w.want = []byte(strconv.Itoa(total) + "\n")
	for i, k := range creators {
		// Honest clients come from addresses of their own (127.0.0.2, …),
		// as they would from their own machines; the hostile ones share
		// 127.0.0.1.
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))}, Timeout: 10 * time.Second}
		c, err := client.Dial(context.Background(), url, client.WithPlatformKeys(platform), client.WithCreator(k), client.WithDialer(d.DialContext))
		if err != nil {
			b.Fatal(err)
		}
		w.clients = append(w.clients, c)
	}
	return w
}

func (w *world) fail(what string, err error) {
	msg := what
	if err != nil {
		msg += ": " + errorClass(err)
	}
	w.mu.Lock()
	if w.errs[msg] == 0 && err != nil {
		w.example[msg] = err.Error()
	}
	w.errs[msg]++
	w.mu.Unlock()
}

// errorClass trims an error to what tells errors apart (no ids, no
// addresses).
func errorClass(err error) string {
	if ce := new(connect.Error); errors.As(err, &ce) {
		s := ce.Code().String()
		if i := strings.Index(ce.Message(), `rule "`); i >= 0 {
			s += " " + strings.SplitN(ce.Message()[i:], ":", 2)[0]
		}
		return s
	}
	s := err.Error()
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// honest starts sessions at soakRate (open loop) until ctx ends, then
// waits for those in flight.
func (w *world) honest(ctx context.Context) {
	const maxInFlight = 256
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxInFlight)
	// Start i is due at t0 + i/rate: a start the loop comes to late (a
	// busy machine) is made at once, not dropped as a ticker would drop
	// its tick, so the offered rate is the asked one.
	t0 := time.Now()
	warm := t0.Add(*soakWarmup)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := 0; ; i++ {
		timer.Reset(time.Until(t0.Add(time.Duration(float64(i) * float64(time.Second) / *soakRate))))
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-timer.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			w.behind.Add(1)
			continue
		}
		wg.Add(1)
		w.started.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t0 := time.Now()
			// A flow started before the end finishes after it.
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if w.flow(fctx, w.clients[i%len(w.clients)]) {
				w.done.Add(1)
				if t0.After(warm) {
					w.mu.Lock()
					w.latencies = append(w.latencies, time.Since(t0))
					w.mu.Unlock()
				}
			}
		}()
	}
}

// flow is one whole session; it reports whether it went through.
func (w *world) flow(ctx context.Context, c *client.Client) bool {
	id, err := c.CreateSession(ctx, w.doc)
	if err != nil {
		w.fail("create", err)
		return false
	}
	as, err := c.Attest(ctx, id, w.pol)
	if err != nil {
		w.fail("attest", err)
		return false
	}
	defer as.CloseIdleConnections()
	if _, err := as.UploadProgram(ctx, w.alice, "sum.wasm", w.wasm); err != nil {
		w.fail("upload program", err)
		return false
	}
	if _, err := as.UploadInput(ctx, w.bob, "a", []byte("hello")); err != nil {
		w.fail("upload a", err)
		return false
	}
	if _, err := as.UploadInput(ctx, w.carol, "b", []byte("world")); err != nil {
		w.fail("upload b", err)
		return false
	}
	got, err := as.Result(ctx, w.dave, "sum")
	if err != nil {
		w.fail("result", err)
		return false
	}
	if !bytes.Equal(got, w.want) {
		w.corrupted.Add(1)
		w.fail("corrupted result", nil)
		return false
	}
	if err := as.Close(ctx, w.bob); err != nil {
		w.fail("close", err)
		return false
	}
	return true
}

// The hostile kinds, and the outcome that counts as refused for the right
// reason.
var hostileKinds = []string{"oversized", "compressed", "slow", "unauthenticated", "impostor"}

func (w *world) note(kind, outcome string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hostileBy[kind] == nil {
		w.hostileBy[kind] = map[string]int{}
	}
	w.hostileBy[kind][outcome]++
}

// hostile sends one kind of hostile request after another until ctx ends.
func (w *world) hostile(ctx context.Context, kind string) {
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{ServerName: node.NodeServerName, InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}},
		ForceAttemptHTTP2: true, DisableCompression: true,
	}}
	defer hc.CloseIdleConnections()
	svc := cloisterv1connect.NewNodeServiceClient(hc, w.url)
	bomb := gzipBomb(4 << 20)
	impostor, _ := keys.Generate()
	for ctx.Err() == nil {
		var outcome string
		switch kind {
		case "oversized":
			// 100 MiB declared, to an RPC whose limit is 4 KiB.
			outcome = rawOutcome(ctx, hc, w.url+cloisterv1connect.NodeServiceGetNodeInfoProcedure, &slowBody{ctx: ctx, every: time.Second}, 100<<20, "", "request-size")
		case "compressed":
			// 4 KiB of gzip that inflates to 4 MiB.
			outcome = rawOutcome(ctx, hc, w.url+cloisterv1connect.NodeServiceCreateSessionProcedure, bytes.NewReader(bomb), int64(len(bomb)), "gzip", "compression-ratio")
		case "slow":
			// Headers, then one byte every 2 s.
			outcome = rawOutcome(ctx, hc, w.url+cloisterv1connect.NodeServiceCreateSessionProcedure, &slowBody{ctx: ctx, every: 2 * time.Second}, 64<<10, "", "")
		case "unauthenticated":
			_, err := svc.CreateSession(ctx, connect.NewRequest(&cloisterv1.CreateSessionRequest{Policy: w.doc}))
			outcome = ruleOutcome(err, "admission")
		case "impostor":
			// Signed, by a key of its own that the policy even names.
			nonce := make([]byte, 16)
			rand.Read(nonce)
			ms := time.Now().UnixMilli()
			msg := protocol.RequestMessage("", protocol.OpCreateSession, "", sha256.Sum256(w.doc), [32]byte{}, ms, nonce)
			_, err := svc.CreateSession(ctx, connect.NewRequest(&cloisterv1.CreateSessionRequest{Policy: w.doc,
				Auth: &cloisterv1.SignedRequest{Principal: impostor.Public().SigningString(), UnixMs: ms, Nonce: nonce, Signature: impostor.Sign(msg)}}))
			outcome = ruleOutcome(err, "admission")
		}
		if ctx.Err() != nil && outcome != "accepted" {
			return // cut by the end of the run, not by the node
		}
		w.note(kind, outcome)
	}
}

// ruleOutcome classifies the answer to a hostile RPC.
func ruleOutcome(err error, rule string) string {
	switch {
	case err == nil:
		return "accepted"
	case strings.Contains(err.Error(), `rule "`+rule+`"`):
		return "refused: " + rule
	default:
		return "refused otherwise: " + errorClass(err)
	}
}

// rawOutcome posts body and classifies the answer: a connect error naming
// rule ("" for a body cut off: any error, or the connection closed).
func rawOutcome(ctx context.Context, hc *http.Client, url string, body io.Reader, length int64, encoding, rule string) string {
	req, err := http.NewRequestWithContext(ctx, "POST", url, body)
	if err != nil {
		return "client error"
	}
	req.ContentLength = length
	req.Header.Set("Content-Type", "application/proto")
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := hc.Do(req)
	if err != nil {
		if rule == "" {
			return "refused: cut off"
		}
		return "refused otherwise: " + errorClass(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode == http.StatusOK {
		return "accepted"
	}
	if rule == "" {
		return "refused: cut off"
	}
	if bytes.Contains(b, []byte(`rule \"`+rule+`\"`)) {
		return "refused: " + rule
	}
	return fmt.Sprintf("refused otherwise: status %d", resp.StatusCode)
}

// slowBody sends one byte every interval until ctx ends.
type slowBody struct {
	ctx   context.Context
	every time.Duration
}

func (s *slowBody) Read(p []byte) (int, error) {
	select {
	case <-time.After(s.every):
	case <-s.ctx.Done():
		return 0, s.ctx.Err()
	}
	p[0] = 0x0a
	return 1, nil
}

func gzipBomb(n int) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(make([]byte, n))
	zw.Close()
	return buf.Bytes()
}

// rssSample is the node's memory at one time.
type rssSample struct {
	at          time.Duration
	rss, anon   int64 // VmRSS, RssAnon (bytes)
	cpu         time.Duration
	done, fails int64
	// From the node's /metrics (0 for the validator): the heap live after
	// the last collection, the collector's goal for the next, the heap's
	// spans in use, and the goroutines.
	live, goal, inuse, goroutines int64
}

// sampleRSS reads /proc/PID (and, given metricsURL, the process's Go
// heap from its /metrics) every 5 s until ctx ends, logging every 30 s.
func sampleRSS(ctx context.Context, name string, pid int, metricsURL string, start time.Time, w *world, b *testing.B) []rssSample {
	var out []rssSample
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: node.NodeServerName, InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	for {
		s := rssSample{at: time.Since(start), done: w.done.Load()}
		s.rss, s.anon = procStatus(pid)
		s.cpu = procCPU(pid)
		if metricsURL != "" {
			m := scrape(ctx, hc, metricsURL)
			s.live, s.goal, s.inuse, s.goroutines = m["go_gc_heap_live_bytes"], m["go_gc_heap_goal_bytes"], m["go_memstats_heap_inuse_bytes"], m["go_goroutines"]
		}
		w.mu.Lock()
		for _, n := range w.errs {
			s.fails += int64(n)
		}
		w.mu.Unlock()
		out = append(out, s)
		if len(out)%6 == 1 {
			heap := ""
			if metricsURL != "" {
				heap = fmt.Sprintf(" heap live=%.1f goal=%.1f inuse=%.1f MiB goroutines=%d", mib(s.live), mib(s.goal), mib(s.inuse), s.goroutines)
			}
			b.Logf("t=%4.0fs %s rss=%6.1f MiB (anon %6.1f)%s cpu=%6.1fs sessions=%d errors=%d", s.at.Seconds(), name, mib(s.rss), mib(s.anon), heap, s.cpu.Seconds(), s.done, s.fails)
		}
		select {
		case <-ctx.Done():
			return out
		case <-t.C:
		}
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// scrape reads the unlabelled samples of a Prometheus text page (an empty
// map if it cannot be read).
func scrape(ctx context.Context, hc *http.Client, url string) map[string]int64 {
	out := map[string]int64{}
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return out
	}
	resp, err := hc.Do(req)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.ContainsAny(name, "#{") {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[name] = int64(f)
		}
	}
	return out
}

func procStatus(pid int) (rss, anon int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = v << 10
		case "RssAnon:":
			anon = v << 10
		}
	}
	return rss, anon
}

// procCPU is the process's user+system CPU time.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	s := string(b[bytes.LastIndexByte(b, ')')+2:])
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// afterWarmup returns the first sample at or after the warm-up, the last,
// and the peak after the warm-up: RSS growth is from the first to the last.
func afterWarmup(series []rssSample) (base, last, peak rssSample) {
	for _, s := range series {
		if s.at < *soakWarmup {
			continue
		}
		if base.at == 0 {
			base = s
		}
		last = s
		if s.rss > peak.rss {
			peak = s
		}
	}
	return base, last, peak
}

func growth(a, b int64) float64 {
	if a == 0 {
		return 0
	}
	return 100 * float64(b-a) / float64(a)
}

func (w *world) report(b *testing.B, elapsed time.Duration, series, vseries []rssSample, load0, load1 string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	slices.Sort(w.latencies)
	pct := func(p float64) time.Duration {
		if len(w.latencies) == 0 {
			return 0
		}
		return w.latencies[min(len(w.latencies)-1, int(p*float64(len(w.latencies))))]
	}
	rate := float64(w.done.Load()) / elapsed.Seconds()
	base, last, peak := afterWarmup(series)
	b.Logf("load average: %s at start, %s at end", load0, load1)
	b.Logf("honest: %d started, %d whole sessions (%.1f/s), %d starts skipped (256 in flight), p50 %s, p99 %s (after warm-up)",
		w.started.Load(), w.done.Load(), rate, w.behind.Load(), pct(0.50).Round(time.Millisecond), pct(0.99).Round(time.Millisecond))
	b.Logf("node RSS after warm-up: %.1f → %.1f MiB (%+.1f%%), peak %.1f MiB; anonymous %.1f → %.1f MiB (%+.1f%%)",
		mib(base.rss), mib(last.rss), growth(base.rss, last.rss), mib(peak.rss), mib(base.anon), mib(last.anon), growth(base.anon, last.anon))
	b.Logf("node Go heap after warm-up: live %.1f → %.1f MiB, goal %.1f → %.1f MiB, in use %.1f → %.1f MiB; goroutines %d → %d",
		mib(base.live), mib(last.live), mib(base.goal), mib(last.goal), mib(base.inuse), mib(last.inuse), base.goroutines, last.goroutines)
	if vseries != nil {
		vb, vl, vp := afterWarmup(vseries)
		b.Logf("validator RSS after warm-up: %.1f → %.1f MiB (%+.1f%%), peak %.1f MiB; anonymous %.1f → %.1f MiB (%+.1f%%); CPU %.0f s",
			mib(vb.rss), mib(vl.rss), growth(vb.rss, vl.rss), mib(vp.rss), mib(vb.anon), mib(vl.anon), growth(vb.anon, vl.anon), vl.cpu.Seconds())
		b.ReportMetric(growth(vb.rss, vl.rss), "validator-rss-growth-%")
	}
	perSession := 0.0
	if n := w.done.Load(); n > 0 {
		perSession = float64(last.cpu.Milliseconds()) / float64(n)
	}
	b.Logf("CPU: node %.0f s (%.1f ms per whole session, its workers not counted), clients %.0f s, in %.0f s on %d cores",
		last.cpu.Seconds(), perSession, w.clientCPU.Seconds(), elapsed.Seconds(), runtime.NumCPU())
	fails := 0
	for k, n := range w.errs {
		b.Logf("honest error: %s × %d (first: %.300s)", k, n, w.example[k])
		fails += n
	}
	accepted := 0
	for _, k := range hostileKinds {
		outs := w.hostileBy[k]
		keys := slices.Sorted(func(yield func(string) bool) {
			for o := range outs {
				if !yield(o) {
					return
				}
			}
		})
		var parts []string
		for _, o := range keys {
			parts = append(parts, fmt.Sprintf("%s × %d", o, outs[o]))
			if o == "accepted" {
				accepted += outs[o]
			}
		}
		b.Logf("hostile %-15s %s", k, strings.Join(parts, ", "))
	}
	b.ReportMetric(rate, "sessions/s")
	b.ReportMetric(float64(pct(0.99).Milliseconds()), "p99-ms")
	b.ReportMetric(growth(base.rss, last.rss), "rss-growth-%")
	b.ReportMetric(mib(peak.rss), "rss-peak-MiB")
	b.ReportMetric(float64(fails), "honest-errors")
	b.ReportMetric(float64(w.corrupted.Load()), "corrupted")
	b.ReportMetric(float64(accepted), "hostile-accepted")
}
