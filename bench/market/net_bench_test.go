package market

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/dispatch"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/acl"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/deal"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/market"
	"github.com/cloisterhq/cloister/policy"
)

// BenchmarkTestnet runs the marketplace on the loopback test network
// (package internal/testnet: a validator, 4 software provider nodes
// without their web consoles, a broker, a blob store, each its own
// process; the dispatcher a process
// too, its ledger reached through a tap that times the entries it
// appends) with 100 live offers on the ledger, 4 of them the real nodes'
// at the lowest price, and two sealed programs listed (sum and wordcount,
// benchPrograms). For each program:
//
//   - direct: a consumer's own session on a provider node, no dispatcher:
//     the policy the dispatcher would write, the session created and
//     attested, the inputs sent, the run (the node fetches the sealed
//     program and obtains its key from the broker under a class grant the
//     innovator made beforehand), the result read. ttfb is its whole time.
//   - request: 'cloister request' (dispatch.Submit), one at a time. The
//     decision is timed on the dispatcher's side, through the tap: from
//     the market.request committed to the market.assigned entry arriving
//     at the ledger (decide: live offers filtered and ranked, a session
//     opened on the best candidate, its fresh evidence fetched and
//     verified, the requirement judged on the verified claims, the entry
//     written and signed) and to that entry committed (decide+commit);
//     then the grant committed (granted). ttfb is from submission to the
//     consumer holding the result (its market.accounted entry arriving at
//     the tap); done is Submit's return (the accounting committed).
//     ttfb/direct is the ratio of the p50s (goal ≤ 2). The decision's
//     steps come from the dispatcher's log (dispatcher-*) and, for the
//     session's creation, the nodes' logs (node-*).
//   - request-N: N requests in flight at once: served/s, and dispatched/s
//     (assignments committed per second from the first submission).
//
// decision-steps times the decision's steps from this process, to show
// where its time goes. Every wait is bounded (setup 6 minutes, each
// request 60 s, each sub-benchmark 20 minutes).
//
//	go test ./bench/market -run - -bench Testnet -benchtime 30x -timeout 60m
func BenchmarkTestnet(b *testing.B) {
	f := network(b)
	b.Run("decision-steps", func(b *testing.B) { f.decisionSteps(b, f.programs[0]) })
	for _, p := range f.programs {
		b.Run(p.name, func(b *testing.B) {
			b.Run("direct", func(b *testing.B) { f.directs(b, p) })
			b.Run("request", func(b *testing.B) { f.requests(b, p, 1) })
			for _, n := range []int{4, 8} {
				if n > 4 && p.name == "wordcount" {
					// Eight compilations of 3.2 MiB on 2 cores overrun
					// the runs' deadlines: capacity, not dispatch.
					continue
				}
				b.Run(fmt.Sprintf("request-%d", n), func(b *testing.B) { f.requests(b, p, n) })
			}
		})
	}
}

// directs runs b.N direct sessions of p, one at a time, over the nodes in
// turn.
func (f *netFixture) directs(b *testing.B, p *program) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := f.directGrant(ctx, p); err != nil {
		b.Fatal(err)
	}
	var lat, open, run []time.Duration
	i := 0
	for b.Loop() {
		d, err := f.directSession(ctx, p, i%len(f.nodes))
		if err != nil {
			b.Fatal(err)
		}
		lat, open, run = append(lat, d.total), append(open, d.open), append(run, d.run)
		i++
	}
	report(b, "open", open)
	report(b, "run", run)
	p50 := report(b, "ttfb", lat)
	f.mu.Lock()
	f.direct[p.name] = p50
	f.mu.Unlock()
}

// requests runs b.N requests of p, n at a time, and reports their steps.
func (f *netFixture) requests(b *testing.B, p *program, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	type sample struct {
		id         string
		s          steps
		ttfb, done time.Duration
	}
	var (
		mu      sync.Mutex
		samples []sample
		errs    []error
	)
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for range jobs {
				t0 := time.Now()
				id, err := f.request(ctx, p)
				done := time.Since(t0)
				var s steps
				if err == nil {
					var ok bool
					if s, ok = f.tap.of(id); !ok {
						err = fmt.Errorf("request %s: the tap saw not every step: %+v", id, s)
					}
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					s.submitted = t0
					samples = append(samples, sample{id: id, s: s, ttfb: s.resultHeld.Sub(t0), done: done})
				}
				mu.Unlock()
			}
		})
	}
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if len(errs) > 0 {
		b.Fatalf("%d of %d requests failed; the first: %v", len(errs), len(errs)+len(samples), errs[0])
	}
	var prepared, committed, granted, ttfb, done []time.Duration
	var last time.Time
	failovers, refused := 0, 0
	for _, s := range samples {
		prepared = append(prepared, s.s.firstIn.Sub(s.s.requested))
		refused += s.s.refused
		committed = append(committed, s.s.assignOut.Sub(s.s.requested))
		granted = append(granted, s.s.granted.Sub(s.s.requested))
		ttfb = append(ttfb, s.ttfb)
		done = append(done, s.done)
		if s.s.assignOut.After(last) {
			last = s.s.assignOut
		}
		failovers += s.s.failovers
	}
	report(b, "decide", prepared)
	ids := map[string]bool{}
	for _, s := range samples {
		ids[s.id] = true
	}
	f.dispatcherSteps(b, ids)
	report(b, "decide+commit", committed)
	report(b, "granted", granted)
	p50 := report(b, "ttfb", ttfb)
	report(b, "done", done)
	b.ReportMetric(float64(len(samples))/elapsed.Seconds(), "served/s")
	b.ReportMetric(float64(len(samples))/last.Sub(start).Seconds(), "dispatched/s")
	b.ReportMetric(float64(failovers), "failovers")
	b.ReportMetric(float64(refused), "assign-retries")
	f.mu.Lock()
	if d := f.direct[p.name]; d > 0 {
		b.ReportMetric(float64(p50)/float64(d), "ttfb/direct")
	}
	f.mu.Unlock()
}

// dispatcherSteps reports the decision's steps as the dispatcher logged
// them for the requests ids (its "assigned" lines): the whole decision
// from its start to the entries signed (dispatcher-decided), the ledger
// reads before ranking (-read), the node creating the session (-session),
// its evidence fetched and verified (-attest).
func (f *netFixture) dispatcherSteps(b *testing.B, ids map[string]bool) {
	raw, err := os.ReadFile(f.dispLog)
	if err != nil {
		b.Fatal(err)
	}
	names := []string{"decided_ms", "read_ms", "session_ms", "attest_ms"}
	lat := make([][]time.Duration, len(names))
	sessions := map[string]bool{}
	for _, line := range bytes.Split(raw, []byte("\n")) {
		var l map[string]any
		if json.Unmarshal(line, &l) != nil || l["msg"] != "assigned" || !ids[fmt.Sprint(l["id"])] {
			continue
		}
		sessions[fmt.Sprint(l["session"])] = true
		for i, n := range names {
			if v, ok := l[n].(float64); ok {
				lat[i] = append(lat[i], time.Duration(v*float64(time.Millisecond)))
			}
		}
	}
	for i, n := range []string{"dispatcher-decided", "dispatcher-read", "dispatcher-session", "dispatcher-attest"} {
		report(b, n, lat[i])
	}
	f.nodeSteps(b, sessions)
}

// nodeSteps reports, for the sessions the dispatcher opened, the steps of
// their creation as the nodes logged them ("session created"): the policy
// parsed and checked (node-checked), the session's keys, RA-TLS
// certificate and evidence made (node-keys), its first log frame written
// and synced (node-stored).
func (f *netFixture) nodeSteps(b *testing.B, sessions map[string]bool) {
	logs, err := filepath.Glob(filepath.Join(filepath.Dir(f.dispLog), "net", "logs", "*.log"))
	if err != nil {
		b.Fatal(err)
	}
	names := []string{"checked_us", "keys_us", "stored_us"}
	lat := make([][]time.Duration, len(names))
	for _, lf := range logs {
		raw, err := os.ReadFile(lf)
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if !strings.Contains(line, `msg="session created"`) {
				continue
			}
			kv := map[string]string{}
			for _, w := range strings.Fields(line) {
				if k, v, ok := strings.Cut(w, "="); ok {
					kv[k] = v
				}
			}
			if !sessions[kv["session"]] {
				continue
			}
			for i, n := range names {
				if us, err := strconv.ParseInt(kv[n], 10, 64); err == nil {
					lat[i] = append(lat[i], time.Duration(us)*time.Microsecond)
				}
			}
		}
	}
	for i, n := range []string{"node-checked", "node-keys", "node-stored"} {
		report(b, n, lat[i])
	}
}

// decisionSteps times, from this process, the steps of one dispatch
// decision as the dispatcher takes them (dispatch.Dispatcher.assign), to
// show where its time goes: the live offers and the providers' records
// read from the ledger, the requirement judged and the candidates ranked,
// the policy written, a session opened on the best candidate (TLS dial
// and create), its fresh evidence fetched and verified, the
// market.assigned entry signed. The sessions are left to expire.
func (f *netFixture) decisionSteps(b *testing.B, p *program) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	reqm, err := market.Compile(netRequire)
	if err != nil {
		b.Fatal(err)
	}
	_, dk, _ := ed25519.GenerateKey(nil)
	names := []string{"offers", "records", "match+rank", "policy", "dial", "create", "attest", "sign", "total"}
	lat := make([][]time.Duration, len(names))
	for b.Loop() {
		var ts []time.Time
		mark := func() { ts = append(ts, time.Now()) }
		mark()
		offers, err := f.lc.Offers(ctx)
		if err != nil {
			b.Fatal(err)
		}
		mark()
		recs, err := f.lc.MarketRecords(ctx)
		if err != nil {
			b.Fatal(err)
		}
		mark()
		records := map[string][]bool{}
		for _, r := range recs.Records {
			records[r.Node] = r.Recent
		}
		var cs []market.Candidate
		byNode := map[string]int{}
		for i, o := range offers.Offers {
			ok, err := reqm.Satisfied(&o.Offer, market.Verified{Class: o.Offer.Classes[0]})
			if err != nil {
				b.Fatal(err)
			}
			if ok {
				price, _ := market.Price(&o.Offer)
				cs = append(cs, market.Candidate{Node: o.Node, Price: price, Recent: records[o.Node]})
				byNode[o.Node] = i
			}
		}
		id := make([]byte, 32)
		rand.Read(id)
		ranked := market.Rank(hex.EncodeToString(id), cs)
		if len(ranked) == 0 {
			b.Fatal("no candidate")
		}
		best := offers.Offers[byNode[ranked[0].Node]]
		i := slices.IndexFunc(f.nodes, func(o lclient.LiveOffer) bool { return o.Node == best.Node })
		if i < 0 {
			b.Fatalf("the best candidate %s is not a real node", best.Node)
		}
		mark()
		doc, pol, err := f.directPolicy(p, i)
		if err != nil {
			b.Fatal(err)
		}
		mark()
		pk, _ := protocol.ParseEd25519Key(best.Node)
		c, err := client.Dial(ctx, best.Endpoint, client.WithPlatformKeys(pk))
		if err != nil {
			b.Fatal(err)
		}
		mark()
		sid, err := c.CreateSession(ctx, doc)
		if err != nil {
			b.Fatal(err)
		}
		mark()
		as, err := c.Attest(ctx, sid, pol)
		if err != nil {
			b.Fatal(err)
		}
		cl := as.Claims()
		if ok, err := reqm.Satisfied(&best.Offer, market.Verified{Class: string(cl.Class), Measurement: hex.EncodeToString(cl.Measurement), Debug: cl.Debug}); !ok || err != nil {
			b.Fatalf("the verified claims do not satisfy the requirement: %v", err)
		}
		mark()
		a := deal.Assignment{Request: hex.EncodeToString(id), Token: 1, Node: best.Node, Session: sid, PolicyHash: pol.HashHex(), Policy: doc,
			Class: string(cl.Class), Measurement: hex.EncodeToString(cl.Measurement), RunDeadline: acl.FormatTime(pol.Expires)}
		if _, err := verify.NewEntry(dk, deal.KindAssigned, a); err != nil {
			b.Fatal(err)
		}
		mark()
		as.CloseIdleConnections()
		c.Close()
		for k := range len(ts) - 1 {
			lat[k] = append(lat[k], ts[k+1].Sub(ts[k]))
		}
		lat[len(names)-1] = append(lat[len(names)-1], ts[len(ts)-1].Sub(ts[0]))
	}
	for k, n := range names {
		report(b, n, lat[k])
	}
}

// report reports the p50 and p99 of lat under name and returns the p50.
func report(b *testing.B, name string, lat []time.Duration) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	p50, p99 := s[len(s)/2], s[min(len(s)-1, len(s)*99/100)]
	b.ReportMetric(float64(p50.Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, name+"-p99-ms")
	return p50
}

// request is one 'cloister request' of p on its inputs; it returns the
// request's id once the result is checked.
func (f *netFixture) request(ctx context.Context, p *program) (string, error) {
	oc, err := dispatch.Submit(ctx, dispatch.RequestOptions{Dispatcher: f.dispatcher, Ledger: f.tapURL, Key: f.consumer,
		ProgramSHA256: p.sum.SHA256, Sealed: p.sum.Digest, Requirement: netRequire, Inputs: p.inputs, Deadline: requestBound})
	if err != nil {
		return "", err
	}
	if !jsonEqual(oc.Outputs[p.output], p.want) {
		return "", fmt.Errorf("request %s: %s is %q, want %q", oc.Request, p.output, oc.Outputs[p.output], p.want)
	}
	return oc.Request, nil
}

// directPolicy writes the policy of a direct session on node i: the one
// the dispatcher would write for such a request (dispatch.WritePolicy).
func (f *netFixture) directPolicy(p *program, i int) ([]byte, *policy.Policy, error) {
	reqm, err := market.Compile(netRequire)
	if err != nil {
		return nil, nil, err
	}
	id := make([]byte, 32)
	rand.Read(id)
	dl := time.Now().Add(requestBound)
	req := &deal.Request{ID: hex.EncodeToString(id), ProgramSHA256: p.sum.SHA256, Sealed: p.sum.Digest, Requirement: netRequire,
		Deadline: acl.FormatTime(dl), SealingKey: f.consumer.Public().SealingString()}
	for _, in := range p.inputs {
		req.Inputs = append(req.Inputs, in.Name)
	}
	doc, err := dispatch.WritePolicy(req, reqm, f.consumer.Public().SigningString(), p.listing, f.nodes[i], dl.Add(-requestBound/2))
	if err != nil {
		return nil, nil, err
	}
	pol, err := policy.Parse(doc)
	return doc, pol, err
}

// open creates a session for doc on node i and attests it.
func (f *netFixture) open(ctx context.Context, i int, doc []byte, pol *policy.Policy) (*client.Client, *client.AttestedSession, error) {
	o := f.nodes[i]
	pk, err := protocol.ParseEd25519Key(o.Node)
	if err != nil {
		return nil, nil, err
	}
	c, err := client.Dial(ctx, o.Endpoint, client.WithPlatformKeys(pk))
	if err != nil {
		return nil, nil, err
	}
	id, err := c.CreateSession(ctx, doc)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	as, err := c.Attest(ctx, id, pol)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, as, nil
}

// directGrant has the innovator grant the sealed program's key to any
// software isolate of the nodes' measurement, for the direct sessions:
// made once, beforehand, as a consumer running the program directly
// would arrange with the innovator.
func (f *netFixture) directGrant(ctx context.Context, p *program) error {
	doc, pol, err := f.directPolicy(p, 0)
	if err != nil {
		return err
	}
	c, as, err := f.open(ctx, 0, doc, pol)
	if err != nil {
		return err
	}
	m := hex.EncodeToString(as.Claims().Measurement)
	as.CloseIdleConnections()
	c.Close()
	inn, err := keys.Load(f.net.Info().Keys["innovator"])
	if err != nil {
		return err
	}
	g := acl.Grant{Artifact: p.sum.Digest, Owner: inn.Public().SigningString(), Grantee: acl.Grantee{Class: "software", Measurements: []string{m}},
		NotAfter: acl.FormatTime(time.Now().Add(2 * time.Hour)), MaxUses: 1 << 20}
	se, err := verify.NewEntry(inn.Signer(), acl.KindGranted, g)
	if err != nil {
		return err
	}
	_, err = f.lc.Append(ctx, se)
	return err
}

// directTimes are a direct session's steps: open (policy written,
// session created and attested), run (input sent to the run's end) and
// total (to the result in hand).
type directTimes struct{ open, run, total time.Duration }

// directSession is the consumer's own session on node i, timed from its
// creation to the result in hand.
func (f *netFixture) directSession(ctx context.Context, p *program, i int) (d directTimes, err error) {
	ctx, cancel := context.WithTimeout(ctx, requestBound)
	defer cancel()
	t0 := time.Now()
	doc, pol, err := f.directPolicy(p, i)
	if err != nil {
		return d, err
	}
	c, as, err := f.open(ctx, i, doc, pol)
	if err != nil {
		return d, err
	}
	defer c.Close()
	defer as.CloseIdleConnections()
	d.open = time.Since(t0)
	for _, in := range p.inputs {
		if _, err := as.UploadInput(ctx, f.consumer, in.Name, in.Data); err != nil {
			return d, err
		}
	}
	st, err := as.Wait(ctx)
	if err != nil {
		return d, err
	}
	if st.Report == nil || st.Reason != "" {
		return d, errors.New("the run failed: " + st.Reason)
	}
	d.run = time.Since(t0) - d.open
	out, err := as.Result(ctx, f.consumer, p.output)
	d.total = time.Since(t0)
	if err != nil {
		return d, err
	}
	if !jsonEqual(out, p.want) {
		return d, fmt.Errorf("%s is %q, want %q", p.output, out, p.want)
	}
	return d, nil
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return bytes.Equal(ja, jb)
}
