package dispatch_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/dispatch"
	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/internal/testbin"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/acl"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/policy"
	"github.com/cloisterhq/cloister/sealed"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// proc is a cloister process the test started; its output lines (both
// streams) are kept and offered on lines.
type proc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	log   bytes.Buffer
	lines chan string
	done  chan struct{}
}

func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), lines: make(chan string, 256), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "CLOISTER_TEST_CLI=1")
	out, _ := p.cmd.StdoutPipe()
	errp, _ := p.cmd.StderrPipe()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	scan := func(rd interface{ Read([]byte) (int, error) }) {
		defer wg.Done()
		sc := bufio.NewScanner(rd)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			if p.log.Len() < 1<<20 {
				p.log.WriteString(sc.Text() + "\n")
			}
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
	}
	wg.Add(2)
	go scan(out)
	go scan(errp)
	go func() { wg.Wait(); p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.stop)
	return p
}

func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.kill()
	}
}

func (p *proc) kill() {
	p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
	}
}

func (p *proc) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// find waits (at most 2 minutes) for a line containing marker and
// returns the rest of the line after it, up to the next space.
func (p *proc) find(t *testing.T, marker string) string {
	t.Helper()
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case l := <-p.lines:
			if _, rest, ok := strings.Cut(l, marker); ok {
				v, _, _ := strings.Cut(rest, " ")
				return v
			}
		case <-p.done:
			t.Fatalf("%v exited before printing %q:\n%s", p.cmd.Args, marker, p)
		case <-timeout:
			t.Fatalf("%v printed no %q in 2 minutes:\n%s", p.cmd.Args, marker, p)
		}
	}
}

func run(t *testing.T, timeout time.Duration, bin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String(), errb.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, out.String(), errb.String()
}

func mustRun(t *testing.T, bin string, args ...string) string {
	t.Helper()
	code, out, errOut := run(t, 2*time.Minute, bin, args...)
	if code != 0 {
		t.Fatalf("cloister %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return strings.TrimSpace(out)
}

// market is a loopback marketplace, every component a process of its
// own: one validator, a blob store, a key broker, provider nodes that
// publish offers, and dispatchers; an innovator's sealed wordcount whose
// key only the dispatchers' grants release.
type market struct {
	t                         *testing.T
	bin, dir, ledger          string
	lc                        *lclient.Client
	sum                       sealed.Summary
	want                      []byte
	text                      string
	consumerKey, innovatorKey string
	listings                  map[string]string // dispatcher key file -> listing file
	listing                   dispatch.Listing
}

type provider struct {
	n         *testbin.Node
	offer     *proc
	key, dir  string
	publicKey string
}

func newMarket(t *testing.T) *market {
	bin, err := testbin.Cloister()
	if err != nil {
		t.Fatal(err)
	}
	m := &market{t: t, bin: bin, dir: t.TempDir(), listings: map[string]string{}}
	out := mustRun(t, bin, "ledger", "testnet", "--validators", "1", "--out", filepath.Join(m.dir, "ledger"))
	home, url, _ := strings.Cut(out, " ")
	m.ledger = url
	start(t, bin, "ledger", "start", "--home", home)
	if m.lc, err = lclient.New(url); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := m.lc.Status(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ledger not up in 60s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	m.innovatorKey, m.consumerKey = m.newKey("innovator"), m.newKey("consumer")
	inn, _ := keys.Load(m.innovatorKey)
	store := start(t, bin, "blob", "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(m.dir, "blobs"), "--push-key", inn.Public().SigningString())
	storeURL := "http://" + store.find(t, "blob store on http://")
	br := start(t, bin, "broker", "--listen", "127.0.0.1:0", "--data", filepath.Join(m.dir, "broker"), "--ledger", url)
	brokerURL := br.find(t, "url ")
	brokerKey := br.find(t, "signing_key ")

	// The innovator seals wordcount, stores the ciphertext, gives the key
	// to the broker after verifying it, and registers the artifact.
	ex, err := examples.Lookup("wordcount")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range ex.Inputs {
		if f.Name == "text" {
			m.text = filepath.Join(m.dir, "text.txt")
			os.WriteFile(m.text, f.Data, 0o600)
		}
	}
	for _, f := range ex.Outputs {
		if f.Name == "count.json" {
			m.want = f.Data
		}
	}
	wasm := filepath.Join(m.dir, "wordcount.wasm")
	os.WriteFile(wasm, ex.Wasm, 0o600)
	sf, sj := filepath.Join(m.dir, "wordcount.sealed"), filepath.Join(m.dir, "wordcount.json")
	os.WriteFile(sj, []byte(mustRun(t, bin, "program", "seal", wasm, "--out", sf, "--json")), 0o600)
	raw, _ := os.ReadFile(sj)
	json.Unmarshal(raw, &m.sum)
	mustRun(t, bin, "blob", "put", sf, "--store", storeURL+"/programs", "--key", m.innovatorKey)
	mustRun(t, bin, "broker", "register", "--shares", "1", "--threshold", "1", "--key", m.innovatorKey, "--artifact", m.sum.Digest,
		"--content-key", sf+".key", "--sealed-json", sj, "--broker", brokerURL, "--broker-key", brokerKey)
	mustRun(t, bin, "artifact", "register", "--ledger", url, "--key", m.innovatorKey, "--sealed-json", sj)
	m.listing = dispatch.Listing{Name: "wordcount.wasm", SHA256: m.sum.SHA256, Outputs: []string{"count.json"},
		Sealed: policy.SealedProgram{Digest: m.sum.Digest, Owner: inn.Public().SigningString(), Stores: []string{storeURL + "/programs"},
			Brokers: []policy.SealedBroker{{URL: brokerURL, Key: brokerKey}}, Threshold: 1},
		Limits: policy.Limits{Memory: "256MiB", Timeout: "2m", MaxOutput: "1MiB"}}
	return m
}

func (m *market) newKey(name string) string {
	k, err := keys.Generate()
	if err != nil {
		m.t.Fatal(err)
	}
	f := filepath.Join(m.dir, name+".key")
	if err := k.Save(f); err != nil {
		m.t.Fatal(err)
	}
	return f
}

// dispatcher starts a dispatcher with a fresh key (or keyFile), after the
// innovator delegated grants of its program to that key (with limits
// beyond the usual, if given, as acl delegate arguments).
func (m *market) dispatcher(keyFile, listen string, limits ...string) (*proc, string) {
	t := m.t
	if keyFile == "" {
		keyFile = m.newKey(fmt.Sprintf("dispatcher%d", len(m.listings)))
	}
	lf, ok := m.listings[keyFile]
	if !ok {
		k, _ := keys.Load(keyFile)
		idx := mustRun(t, m.bin, append([]string{"acl", "delegate", "--ledger", m.ledger, "--key", m.innovatorKey, "--artifact", m.sum.Digest,
			"--delegate", k.Public().SigningString(), "--not-after", "+1h", "--max-duration", "10m", "--max-uses", "1", "--class", "software"}, limits...)...)
		l := m.listing
		fmt.Sscan(idx, &l.Delegation)
		b, _ := json.Marshal(l)
		lf = keyFile + ".listing.json"
		os.WriteFile(lf, b, 0o600)
		m.listings[keyFile] = lf
	}
	p := start(t, m.bin, "dispatch", "--listen", listen, "--ledger", m.ledger, "--key", keyFile, "--program", lf)
	return p, p.find(t, "url ")
}

// provider starts a node and its offer heartbeat.
func (m *market) provider(name, price string, classes ...string) *provider {
	t := m.t
	dir := filepath.Join(m.dir, name)
	os.MkdirAll(dir, 0o700)
	k, _, err := keys.LoadOrCreate(filepath.Join(dir, node.PlatformKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	n, err := testbin.StartNode(m.bin, 2*time.Minute, "--data", dir, "--listen", "127.0.0.1:0", "--ledger", m.ledger, "--warm-workers", "0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	p := &provider{n: n, key: filepath.Join(dir, node.PlatformKeyFile), dir: dir, publicKey: k.Public().SigningString()}
	p.publish(m, price, classes)
	return p
}

func (p *provider) publish(m *market, price string, classes []string, extra ...string) {
	if p.offer != nil {
		p.offer.stop()
	}
	ev := filepath.Join(p.dir, "evidence")
	os.WriteFile(ev, []byte(p.publicKey), 0o600)
	args := []string{"offer", "publish", "--ledger", m.ledger, "--key", p.key, "--evidence", ev, "--memory", "1GiB", "--cores", "1",
		"--concurrency", "2", "--price", price, "--ttl", "60s", "--every", "5s", "--endpoint", p.n.URL}
	for _, c := range classes {
		args = append(args, "--class", c)
	}
	p.offer = start(m.t, m.bin, append(args, extra...)...)
	p.offer.find(m.t, "") // the first offer is on the ledger
}

// request runs 'cloister request' with requirement req in the background.
func (m *market) request(dispatcherURL, req string, deadline time.Duration) (chan [3]any, string) {
	out := filepath.Join(m.t.TempDir(), "out")
	ch := make(chan [3]any, 1)
	go func() {
		code, o, e := run(m.t, deadline+time.Minute, m.bin, "request", "--dispatcher", dispatcherURL, "--key", m.consumerKey,
			"--program", m.sum.SHA256, "--sealed", m.sum.Digest, "--require", req, "--input", "text="+m.text,
			"--output-dir", out, "--deadline", deadline.String(), "--json")
		ch <- [3]any{code, o, e}
	}()
	return ch, out
}

// liveAssignment waits for a request (any) assigned to node and returns
// the request's id.
func (m *market) liveAssignment(node string, within time.Duration) string {
	m.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		open, err := m.lc.MarketOpen(ctx)
		cancel()
		if err == nil {
			for _, r := range open.Requests {
				if r.Live != 0 && r.Node == node {
					return r.ID
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	m.t.Fatalf("no request was assigned to %s within %s", node, within)
	return ""
}

type outcome struct {
	dispatch.Outcome
	Outputs []string `json:"outputs"`
}

// The marketplace across processes: a provider lying about its class is
// never chosen; killing the chosen provider mid-run fails it over to the
// next, whose result arrives before the deadline, and the dead one's
// grant is revoked; two dispatchers on one ledger assign each token once;
// a restarted dispatcher resumes a pending request; the record shows it.
func TestMarketplaceProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a ledger, a store, a broker, nodes and dispatchers")
	}
	m := newMarket(t)
	d1, d1URL := m.dispatcher("", "127.0.0.1:0")
	_, _ = m.dispatcher("", "127.0.0.1:0") // a second dispatcher on the same ledger, watching the same requests
	liar := m.provider("liar", "0.0001", "sev-snp")
	a := m.provider("a", "0.001", "software")
	b := m.provider("b", "0.002", "software")

	// 1. Only sev-snp will do: the liar's offer claims it, its evidence
	// shows software, so nobody serves the request.
	res, _ := m.request(d1URL, "class == 'sev-snp'", 15*time.Second)
	r := <-res
	if r[0].(int) != 1 || !strings.Contains(r[2].(string), "no provider") {
		t.Fatalf("a request only a lying provider claims to meet: exit %v\n%s%s", r[0], r[1], r[2])
	}
	if !strings.Contains(r[2].(string), liar.publicKey) {
		t.Errorf("the refusal does not name the lying provider's skip:\n%s", r[2])
	}

	// 2. Software: a is cheapest; kill it as soon as it is assigned.
	res, outDir := m.request(d1URL, "class == 'software'", 3*time.Minute)
	id := m.liveAssignment(a.publicKey, 2*time.Minute)
	a.n.Kill()
	r = <-res
	if r[0].(int) != 0 {
		t.Fatalf("request after the provider died: exit %v\n%s%s\ndispatcher:\n%s", r[0], r[1], r[2], d1)
	}
	var oc outcome
	if err := json.Unmarshal([]byte(r[1].(string)), &oc); err != nil {
		t.Fatal(err)
	}
	if oc.Provider != b.publicKey || oc.Class != "software" || len(oc.Failovers) != 1 || oc.Failovers[0].Node != a.publicKey || oc.Request != id {
		t.Fatalf("outcome: %+v", oc)
	}
	got, _ := os.ReadFile(filepath.Join(outDir, "count.json"))
	if !bytes.Equal(compact(got), compact(m.want)) {
		t.Fatalf("count.json %s, want %s", got, m.want)
	}
	mr, err := m.lc.MarketRequest(bounded(t), id)
	if err != nil {
		t.Fatal(err)
	}
	// Two dispatchers, yet each token was assigned once: 1 to a, 2 to b.
	if st := mr.State; st.Token != 2 || len(st.Assignments) != 2 || st.Finished == 0 || len(st.Failed) != 1 || st.Failed[0] != a.publicKey {
		t.Fatalf("request state: %+v", st)
	}
	// The dead provider's grant is revoked.
	var list struct {
		Grants []struct {
			Grant     acl.Grant `json:"grant"`
			RevokedBy uint64    `json:"revoked_by"`
		} `json:"grants"`
	}
	inn, _ := keys.Load(m.innovatorKey)
	if err := json.Unmarshal([]byte(mustRun(t, m.bin, "acl", "list", "--ledger", m.ledger, "--artifact", m.sum.Digest,
		"--owner", inn.Public().SigningString(), "--json")), &list); err != nil {
		t.Fatal(err)
	}
	revoked := map[string]bool{}
	for _, g := range list.Grants {
		revoked[g.Grant.Grantee.Node] = revoked[g.Grant.Grantee.Node] || g.RevokedBy != 0
	}
	if !revoked[a.publicKey] || revoked[b.publicKey] {
		t.Fatalf("grants: %+v", list.Grants)
	}

	// 3. A request nobody can serve yet; both dispatchers die and one
	// comes back on the same address; then b offers the region: served.
	res, _ = m.request(d1URL, "class == 'software' && 'late' in regions", 3*time.Minute)
	time.Sleep(2 * time.Second)
	addr := strings.TrimPrefix(d1URL, "http://")
	d1.kill()
	d1b, _ := m.dispatcher(keyOf(d1), addr)
	b.publish(m, "0.002", []string{"software"}, "--region", "late")
	r = <-res
	if r[0].(int) != 0 {
		t.Fatalf("request across a dispatcher restart: exit %v\n%s%s\ndispatcher:\n%s", r[0], r[1], r[2], d1b)
	}

	// The record: a failed once; b ran twice.
	recs, err := m.lc.MarketRecords(bounded(t))
	if err != nil {
		t.Fatal(err)
	}
	byNode := map[string]lclient.ProviderRecord{}
	for _, r := range recs.Records {
		byNode[r.Node] = r
	}
	if ra, rb := byNode[a.publicKey], byNode[b.publicKey]; ra.Failures != 1 || rb.Runs != 2 || rb.Failures != 0 || len(rb.LatencyMs) != 2 {
		t.Fatalf("records: a %+v, b %+v", ra, rb)
	}
	var stats struct {
		Providers []struct {
			Node     string  `json:"node"`
			Runs     uint64  `json:"runs"`
			Failures uint64  `json:"failures"`
			Median   *uint64 `json:"median_latency_ms"`
			CPU      uint64  `json:"cpu_ms"`
			Measured int     `json:"cpu_measured_runs"`
		} `json:"providers"`
	}
	json.Unmarshal([]byte(mustRun(t, m.bin, "offer", "stats", "--ledger", m.ledger, "--json")), &stats)
	if len(stats.Providers) != 2 {
		t.Fatalf("offer stats: %+v", stats)
	}
	// b's node measured the CPU time of both its runs' workers; the
	// accounting carries it, within the wall time on every core.
	rb := byNode[b.publicKey]
	for _, p := range stats.Providers {
		if p.Node == b.publicKey && (p.Measured != 2 || p.CPU == 0 || p.CPU > (rb.LatencyMs[0]+rb.LatencyMs[1])*uint64(runtime.NumCPU())+20) {
			t.Errorf("offer stats: b's CPU time %d ms in %d runs, wall times %v ms", p.CPU, p.Measured, rb.LatencyMs)
		}
	}

	// 4. A lying dispatcher vouches for b, whose offer claims a
	// measurement its isolate does not have. The consumer attests b
	// itself, refuses it before sending anything, and records the
	// failure; no honest dispatcher assigns b either.
	b.publish(m, "0.002", []string{"software"}, "--region", "late", "--measurement", "00")
	lk := m.newKey("lying-dispatcher")
	lkey, _ := keys.Load(lk)
	l := m.listing
	fmt.Sscan(mustRun(t, m.bin, "acl", "delegate", "--ledger", m.ledger, "--key", m.innovatorKey, "--artifact", m.sum.Digest,
		"--delegate", lkey.Public().SigningString(), "--not-after", "+1h", "--max-duration", "10m", "--max-uses", "1", "--class", "software"), &l.Delegation)
	lying, err := dispatch.New(dispatch.Options{Ledger: m.lc, LedgerURL: m.ledger, Key: lkey.Signer(), Programs: []dispatch.Listing{l}})
	if err != nil {
		t.Fatal(err)
	}
	dispatch.VouchForAll(lying)
	srv := httptest.NewServer(lying.Handler())
	defer srv.Close()
	lctx, lcancel := context.WithCancel(context.Background())
	defer lcancel()
	go lying.Run(lctx)
	res, _ = m.request(srv.URL, "class == 'software' && measurement == '00'", 20*time.Second)
	r = <-res
	if r[0].(int) != 1 || !strings.Contains(r[2].(string), "do not satisfy the requirement") {
		t.Fatalf("a request a lying dispatcher vouched for: exit %v\n%s%s", r[0], r[1], r[2])
	}
	recs, err = m.lc.MarketRecords(bounded(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs.Records {
		if rec.Node == b.publicKey && (rec.Runs != 3 || rec.Failures != 1 || len(rec.LatencyMs) != 2) {
			t.Fatalf("b's record after the consumer refused it: %+v", rec)
		}
	}
}

// A dispatcher restarted within its delegation's rate window still keeps
// the rate: it reads its grants back from the ledger instead of counting
// from zero, so it leaves a request it may not grant for open (naming the
// limit) instead of assigning it and failing the provider when the
// ledger refuses the grant.
func TestDispatcherRateSurvivesRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a ledger, a store, a broker, a node and a dispatcher twice")
	}
	m := newMarket(t)
	d, dURL := m.dispatcher("", "127.0.0.1:0", "--rate", "1/1h")
	a := m.provider("a", "0.001", "software")
	res, _ := m.request(dURL, "class == 'software'", 3*time.Minute)
	if r := <-res; r[0].(int) != 0 {
		t.Fatalf("the first request: exit %v\n%s%s\ndispatcher:\n%s", r[0], r[1], r[2], d)
	}
	d.kill()
	d2, _ := m.dispatcher(keyOf(d), strings.TrimPrefix(dURL, "http://"))
	res, _ = m.request(dURL, "class == 'software'", 15*time.Second)
	r := <-res
	if r[0].(int) != 1 || !strings.Contains(r[2].(string), "allows 1 grants in any 1h0m0s") {
		t.Fatalf("a second request within the hour, after a restart: exit %v\n%s%s\ndispatcher:\n%s", r[0], r[1], r[2], d2)
	}
	if !strings.Contains(d2.String(), "rate count read back from the ledger") {
		t.Errorf("the restarted dispatcher did not say it read its grants back:\n%s", d2)
	}
	// Nothing was assigned, so the provider's record is untouched: one
	// run, no failure.
	recs, err := m.lc.MarketRecords(bounded(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs.Records {
		if rec.Node == a.publicKey && (rec.Runs != 1 || rec.Failures != 0) {
			t.Fatalf("the provider's record: %+v", rec)
		}
	}
}

// bounded is a context for one ledger call, ended with the test.
func bounded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func keyOf(p *proc) string {
	for i, a := range p.cmd.Args {
		if a == "--key" {
			return p.cmd.Args[i+1]
		}
	}
	return ""
}

func compact(b []byte) []byte {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return b
	}
	out, _ := json.Marshal(v)
	return out
}
