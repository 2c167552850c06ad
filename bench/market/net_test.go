package market

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/dispatch"
	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/internal/loopback"
	"github.com/cloisterhq/cloister/internal/testbin"
	"github.com/cloisterhq/cloister/internal/testnet"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/acl"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/deal"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/policy"
	"github.com/cloisterhq/cloister/sealed"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// Shape of the benchmark network: realNodes provider processes and
// enough offers of nodes that run nowhere to make liveOffers live offers
// in all. The real nodes offer the lowest matching price, so they are the
// candidates a dispatcher probes; the others are filtered or ranked out,
// as most of a large market is for one request.
const (
	realNodes    = 4
	liveOffers   = 100
	netRequire   = `class == 'software' && memory >= 1 * GiB && price <= 0.01`
	realPrice    = "0.001"
	offerTTL     = 600 * time.Second
	renewOffers  = 200 * time.Second
	setupBound   = 6 * time.Minute
	requestBound = 60 * time.Second
)

// netFixture is a loopback marketplace, every component a process: one
// validator, realNodes software nodes, a broker, a blob store and a
// dispatcher (started here, with its ledger reached through tap so that
// the decision's steps can be timed), the sealed wordcount listed.
type netFixture struct {
	net        *testnet.Network
	lc         *lclient.Client
	tap        *ledgerTap
	tapURL     string
	dispatcher string // its base URL
	dispLog    string // its log (JSON lines)
	consumer   *keys.PrivateKey
	programs   []*program
	nodes      []lclient.LiveOffer // the real nodes' live offers
	stop       func()

	mu     sync.Mutex
	direct map[string]time.Duration // p50 of each program's direct session, once measured
}

// program is a sealed program the dispatcher lists, with an input and
// the output it must give.
type program struct {
	name    string // the benchmark's name for it
	wasm    []byte
	inputs  []dispatch.Input
	output  string
	want    []byte
	sum     sealed.Summary
	listing dispatch.Listing
}

// benchPrograms are the programs measured: sum, a 31 KiB C program that
// runs in a millisecond, which shows what the marketplace adds; and
// wordcount, a 3.2 MiB Go program, whose run is dominated by compiling
// it (a sealed module is never taken from the compilation cache,
// decision 0072).
func benchPrograms() ([]*program, error) {
	wasm, err := os.ReadFile(filepath.Join("..", "session", "testdata", "sum.wasm")) // bench/session's program
	if err != nil {
		return nil, err
	}
	a, bb := []byte("hello"), []byte("world")
	total := 0
	for _, c := range append(slices.Clone(a), bb...) {
		total += int(c)
	}
	sum := &program{name: "sum", wasm: wasm, inputs: []dispatch.Input{{Name: "a", Data: a}, {Name: "b", Data: bb}},
		output: "sum", want: fmt.Appendf(nil, "%d\n", total)}
	ex, err := examples.Lookup("wordcount")
	if err != nil {
		return nil, err
	}
	wc := &program{name: "wordcount", wasm: ex.Wasm, output: "count.json"}
	for _, in := range ex.Inputs {
		if in.Name == "text" {
			wc.inputs = []dispatch.Input{{Name: "text", Data: in.Data}}
		}
	}
	for _, out := range ex.Outputs {
		if out.Name == "count.json" {
			wc.want = out.Data
		}
	}
	return []*program{sum, wc}, nil
}

// network starts the benchmark network; it stops when the calling
// (parent) benchmark ends. A benchmark that runs sub-benchmarks runs once
// per -count, so each count has a network of its own.
func network(b *testing.B) *netFixture {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupBound)
	defer cancel()
	f, err := startNetwork(ctx, b)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(f.stop)
	return f
}

func startNetwork(ctx context.Context, b *testing.B) (f *netFixture, err error) {
	t0 := time.Now()
	bin, err := testbin.Cloister()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cloister-bench-market-")
	if err != nil {
		return nil, err
	}
	var stops []func()
	f = &netFixture{direct: map[string]time.Duration{}, stop: func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		if os.Getenv("CLOISTER_BENCH_KEEP") == "" {
			os.RemoveAll(dir)
		}
	}}
	defer func() {
		if err != nil {
			f.stop()
		}
	}()
	specs := testnet.Nodes(realNodes, []string{"software"})
	for i := range specs {
		specs[i].Price = realPrice // equal prices: the tie-break spreads requests
	}
	nw, err := testnet.Start(ctx, testnet.Options{Dir: filepath.Join(dir, "net"), Bin: bin, Nodes: specs, NoDispatcher: true, OfferTTL: 60 * time.Second,
		NoConsole: true}) // four consoles indexing the ledger on the same cores would compete with what is measured
	if err != nil {
		return nil, err
	}
	stops = append(stops, nw.Stop)
	f.net, f.lc = nw, nw.Ledger()
	info := nw.Info()

	// The innovator seals each program, stores it, escrows its key with
	// the broker, registers it and delegates grants to the dispatcher.
	if f.programs, err = benchPrograms(); err != nil {
		return nil, err
	}
	run := func(args ...string) (string, error) {
		c := exec.CommandContext(ctx, bin, args...)
		var o, e bytes.Buffer
		c.Stdout, c.Stderr = &o, &e
		if err := c.Run(); err != nil {
			return "", fmt.Errorf("cloister %s: %v\n%s", strings.Join(args[:2], " "), err, e.String())
		}
		return strings.TrimSpace(o.String()), nil
	}
	innKey := info.Keys["innovator"]
	inn, err := keys.Load(innKey)
	if err != nil {
		return nil, err
	}
	dk, err := keys.Load(info.Keys["dispatcher"])
	if err != nil {
		return nil, err
	}
	store, br := info.BlobStore.URL+"/programs", info.Brokers[0]
	var listingArgs []string
	for _, p := range f.programs {
		wasm, sf, sj := filepath.Join(dir, p.name+".wasm"), filepath.Join(dir, p.name+".sealed"), filepath.Join(dir, p.name+".json")
		if err := os.WriteFile(wasm, p.wasm, 0o600); err != nil {
			return nil, err
		}
		sumJSON, err := run("program", "seal", wasm, "--out", sf, "--json")
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(sumJSON), &p.sum); err != nil {
			return nil, err
		}
		if err := os.WriteFile(sj, []byte(sumJSON), 0o600); err != nil {
			return nil, err
		}
		if _, err := run("blob", "put", sf, "--store", store, "--key", innKey); err != nil {
			return nil, err
		}
		if _, err := run("broker", "register", "--shares", "1", "--threshold", "1", "--key", innKey, "--artifact", p.sum.Digest,
			"--content-key", sf+".key", "--sealed-json", sj, "--broker", br.URL, "--broker-key", br.SigningKey); err != nil {
			return nil, err
		}
		if _, err := run("artifact", "register", "--ledger", info.LedgerURL, "--key", innKey, "--sealed-json", sj); err != nil {
			return nil, err
		}
		del, err := run("acl", "delegate", "--ledger", info.LedgerURL, "--key", innKey, "--artifact", p.sum.Digest,
			"--delegate", dk.Public().SigningString(), "--not-after", "+2h", "--max-duration", "10m", "--max-uses", "1", "--class", "software")
		if err != nil {
			return nil, err
		}
		p.listing = dispatch.Listing{Name: p.name + ".wasm", SHA256: p.sum.SHA256, Outputs: []string{p.output},
			Sealed: policy.SealedProgram{Digest: p.sum.Digest, Owner: inn.Public().SigningString(), Stores: []string{store},
				Brokers: []policy.SealedBroker{{URL: br.URL, Key: br.SigningKey}}, Threshold: 1},
			Limits: policy.Limits{Memory: "256MiB", Timeout: "2m", MaxOutput: "1MiB"}}
		if _, err := fmt.Sscan(del, &p.listing.Delegation); err != nil {
			return nil, fmt.Errorf("acl delegate printed %q", del)
		}
		lf := filepath.Join(dir, p.name+".listing.json")
		lb, _ := json.Marshal(p.listing)
		if err := os.WriteFile(lf, lb, 0o600); err != nil {
			return nil, err
		}
		listingArgs = append(listingArgs, "--program", lf)
	}

	// The rest of the market: offers of nodes that run nowhere.
	stopOffers, err := publishOffers(ctx, f.lc, liveOffers-realNodes)
	if err != nil {
		return nil, err
	}
	stops = append(stops, stopOffers)
	l, err := f.lc.Offers(ctx)
	if err != nil {
		return nil, err
	}
	if len(l.Offers) != liveOffers {
		return nil, fmt.Errorf("%d live offers, want %d", len(l.Offers), liveOffers)
	}
	for _, nd := range info.Nodes {
		for _, o := range l.Offers {
			if o.Node == nd.PlatformKey {
				f.nodes = append(f.nodes, o)
			}
		}
	}

	// The tap, then the dispatcher as its own process.
	target, _ := url.Parse(info.LedgerURL)
	f.tap = newLedgerTap(target)
	ts := httptest.NewServer(f.tap)
	stops = append(stops, ts.Close)
	f.tapURL = ts.URL
	addrs, err := loopback.Addrs(1)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "dispatcher.log"))
	if err != nil {
		return nil, err
	}
	f.dispLog = logf.Name()
	cmd := exec.Command(bin, append([]string{"dispatch", "--listen", addrs[0], "--ledger", f.tapURL, "--key", info.Keys["dispatcher"], "--log-format", "json"}, listingArgs...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	waited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(waited) }()
	stops = append(stops, func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-waited
		}
	})
	f.dispatcher = "http://" + addrs[0]
	if err := awaitHTTP(ctx, f.dispatcher+"/v1/info"); err != nil {
		return nil, fmt.Errorf("the dispatcher: %w (log %s)", err, logf.Name())
	}
	if f.consumer, err = keys.Load(info.Keys["consumer"]); err != nil {
		return nil, err
	}
	b.Logf("network in %s, up in %s: %d nodes, %d live offers, dispatcher %s, ledger %s (tapped at %s)",
		dir, time.Since(t0).Round(time.Second), realNodes, liveOffers, f.dispatcher, info.LedgerURL, f.tapURL)
	return f, nil
}

// publishOffers registers n nodes that run nowhere and publishes an offer
// for each, renewed until the returned stop is called. A fifth of them
// are cheaper than the real nodes but cannot meet netRequire by the
// fields they offer (half claim sev-snp, half offer 512 MiB): the
// dispatcher filters them before dialling anyone. The rest are dearer.
func publishOffers(ctx context.Context, lc *lclient.Client, n int) (func(), error) {
	type synth struct {
		key   ed25519.PrivateKey
		offer lclient.Offer
	}
	ss := make([]synth, n)
	var regs []*verify.SignedEntry
	ev := base64.StdEncoding.EncodeToString([]byte("{}"))
	for i := range ss {
		_, k, _ := ed25519.GenerateKey(nil)
		pub := protocol.FormatEd25519Key(k.Public().(ed25519.PublicKey))
		o := lclient.Offer{Classes: []string{"software"}, EvidenceDigest: strings.Repeat("0", 64), Memory: 2 << 30, Cores: 2,
			Concurrency: 4, Price: fmt.Sprintf("0.%03d%d", 2+i%8, i%10), Regions: []string{"eu-west"}, TTL: uint64(offerTTL / time.Second)}
		if i%5 == 0 {
			o.Price = "0.0005"
			if i%10 == 0 {
				o.Classes = []string{"sev-snp"}
			} else {
				o.Memory = 512 << 20
			}
		}
		ss[i] = synth{key: k, offer: o}
		se, err := verify.NewEntry(k, ledger.KindNodeRegistered, map[string]any{"platform_key": pub, "class": "software", "evidence": ev,
			"endpoint": fmt.Sprintf("https://127.0.0.1:%d", 1+i)})
		if err != nil {
			return nil, err
		}
		regs = append(regs, se)
	}
	if err := appendAll(ctx, lc, regs); err != nil {
		return nil, fmt.Errorf("registering the offer-only nodes: %w", err)
	}
	publish := func(ctx context.Context) error {
		var es []*verify.SignedEntry
		for _, s := range ss {
			se, err := verify.NewEntry(s.key, ledger.KindOffer, s.offer)
			if err != nil {
				return err
			}
			es = append(es, se)
		}
		return appendAll(ctx, lc, es)
	}
	if err := publish(ctx); err != nil {
		return nil, fmt.Errorf("publishing offers: %w", err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(renewOffers)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
				pctx, c := context.WithTimeout(rctx, time.Minute)
				publish(pctx)
				c()
			}
		}
	}()
	return func() { cancel(); <-done }, nil
}

// appendAll appends es in batches and waits for them to be committed.
func appendAll(ctx context.Context, lc *lclient.Client, es []*verify.SignedEntry) error {
	for len(es) > 0 {
		n := min(len(es), 50)
		res, err := lc.AppendBatch(ctx, es[:n], true)
		if err != nil {
			return err
		}
		for _, r := range res {
			if r.Err != nil {
				return r.Err
			}
		}
		es = es[n:]
	}
	return nil
}

func awaitHTTP(ctx context.Context, u string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", u, res.Status)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ledgerTap is a reverse proxy in front of the ledger's API that notes,
// for each entry appended through it, its kind, the request it concerns,
// when it arrived (signed, ready to append: "prepared") and when the
// ledger answered (committed).
type ledgerTap struct {
	rp *httputil.ReverseProxy
	mu sync.Mutex
	ps []appended
}

type appended struct {
	kind, request, session string
	token                  uint64
	in, out                time.Time
	status                 int
}

func newLedgerTap(target *url.URL) *ledgerTap {
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}
	return &ledgerTap{rp: rp}
}

type statusWriter struct {
	http.ResponseWriter
	status int
	keep   bool // keep a copy of the body
	body   bytes.Buffer
}

func (w *statusWriter) WriteHeader(s int) { w.status = s; w.ResponseWriter.WriteHeader(s) }

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.keep {
		w.body.Write(b)
	}
	return w.ResponseWriter.Write(b)
}

func (t *ledgerTap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	batch := r.URL.Path == "/v1/entries/batch"
	if r.Method != http.MethodPost || r.URL.Path != "/v1/entries" && !batch {
		t.rp.ServeHTTP(w, r)
		return
	}
	in := time.Now()
	body, err := io.ReadAll(io.LimitReader(r.Body, 1000*verify.MaxEntryBytes+1))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	if !batch {
		t.rp.ServeHTTP(sw, r)
		t.note(body, in, time.Now(), sw.status)
		return
	}
	// A batch: each entry is noted with its own result.
	sw.keep = true
	t.rp.ServeHTTP(sw, r)
	out := time.Now()
	var req struct{ Entries []json.RawMessage }
	var res struct {
		Results []struct{ Error *string }
	}
	json.Unmarshal(body, &req)
	json.Unmarshal(sw.body.Bytes(), &res)
	for i, e := range req.Entries {
		status := sw.status
		if i < len(res.Results) && res.Results[i].Error != nil {
			status = http.StatusConflict
		}
		t.note(e, in, out, status)
	}
}

// note records one entry appended through the tap.
func (t *ledgerTap) note(body []byte, in, out time.Time, status int) {
	a := appended{in: in, out: out, status: status}
	if se, err := verify.DecodeEntry(body); err == nil {
		var f struct {
			ID, Request, Session string
			Token                uint64
			Grantee              struct{ Session string }
		}
		json.Unmarshal(se.Entry.Body, &f)
		a.kind, a.request, a.session, a.token = string(se.Entry.Kind), f.Request, f.Session, f.Token
		if se.Entry.Kind == deal.KindRequest {
			a.request = f.ID
		}
		if a.session == "" {
			a.session = f.Grantee.Session
		}
	}
	t.mu.Lock()
	t.ps = append(t.ps, a)
	t.mu.Unlock()
}

// steps are the times of one request's entries through the tap.
type steps struct {
	submitted, requested, firstIn, assignIn, assignOut, granted, resultHeld time.Time
	failovers, refused                                                      int
}

// of reads request id's steps: its market.request committed, its first
// market.assigned arriving (refused or not), the first taken arriving and
// committed, the grant to that session
// committed, the consumer's market.accounted arriving (the consumer holds
// the result then).
func (t *ledgerTap) of(id string) (s steps, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var session string
	// A grant may be taken in a try whose assignment was refused (the
	// node's session.created not yet committed) and so come before it.
	grants := map[string]time.Time{}
	defer func() { s.granted = grants[session] }()
	for _, a := range t.ps {
		if a.status != http.StatusOK && a.kind != deal.KindAssigned {
			continue
		}
		switch {
		case a.kind == deal.KindRequest && a.request == id:
			s.requested = a.out
		case a.kind == deal.KindAssigned && a.request == id && a.status != http.StatusOK:
			// Refused (appendRetry: the node's session.created is not
			// committed yet): the decision was prepared already.
			if s.firstIn.IsZero() {
				s.firstIn = a.in
			}
			s.refused++
		case a.kind == deal.KindAssigned && a.request == id:
			if s.assignIn.IsZero() {
				s.assignIn, s.assignOut, session = a.in, a.out, a.session
				if s.firstIn.IsZero() {
					s.firstIn = a.in
				}
			} else {
				s.failovers++
			}
		case a.kind == acl.KindGranted && a.session != "":
			if _, ok := grants[a.session]; !ok {
				grants[a.session] = a.out
			}
		case a.kind == deal.KindAccounted && a.request == id:
			s.resultHeld = a.in
		}
	}
	return s, !s.requested.IsZero() && !s.assignIn.IsZero() && !grants[session].IsZero() && !s.resultHeld.IsZero()
}
