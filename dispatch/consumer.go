package dispatch

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/acl"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/deal"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/market"
	"github.com/cloisterhq/cloister/policy"
)

// ErrNoProvider is returned when no provider served the request before
// its deadline (the reasons are wrapped with it).
var ErrNoProvider = errors.New("no provider could serve the request")

// ErrRefused wraps a consumer-side refusal of what the dispatcher handed
// over: a policy it should not have written, an isolate whose evidence
// does not match.
var ErrRefused = errors.New("refused")

// Input is one named input of a request.
type Input struct {
	Name string
	Data []byte
}

// RequestOptions describe one request as 'cloister request' makes it.
type RequestOptions struct {
	Dispatcher    string // the dispatcher's base URL
	Ledger        string // the ledger to check against; "" takes the one the dispatcher names
	Key           *keys.PrivateKey
	ProgramSHA256 string
	Sealed        string
	Requirement   string
	Inputs        []Input
	Deadline      time.Duration
	MaxPrice      string
	// Logf, if set, is told each step.
	Logf func(format string, args ...any)
}

// Outcome is a served request: who ran it, how, each failover on the
// way, and the outputs (delivered only once the accounting entry is on
// the ledger).
type Outcome struct {
	Request        string            `json:"request"`
	Provider       string            `json:"provider"`
	Class          string            `json:"class"`
	Measurement    string            `json:"measurement,omitempty"`
	Session        string            `json:"session"`
	Token          uint64            `json:"token"`
	Ledger         string            `json:"ledger"`
	Failovers      []Failover        `json:"failovers"`
	CPUMillis      uint64            `json:"cpu_ms"`           // the provider's report (0: not measured)
	WallMillis     uint64            `json:"wall_ms"`          // the provider's report
	ObservedMillis uint64            `json:"observed_wall_ms"` // from the first input sent to the results held
	Price          string            `json:"price,omitempty"`
	Accounted      uint64            `json:"accounted"` // the market.accounted entry
	Outputs        map[string][]byte `json:"-"`
}

// Submit makes a request and drives it to its result: it signs the
// market.request entry, hands it to the dispatcher, and for each
// assignment the dispatcher makes checks the assignment on the ledger,
// the policy the dispatcher wrote (CheckPolicy), and the isolate's fresh
// evidence itself, before sending any input. It follows failovers until
// the deadline.
func Submit(ctx context.Context, o RequestOptions) (*Outcome, error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	reqm, err := market.Compile(o.Requirement)
	if err != nil {
		return nil, err
	}
	idb := make([]byte, 32)
	rand.Read(idb)
	req := &deal.Request{ID: hex.EncodeToString(idb), ProgramSHA256: o.ProgramSHA256, Sealed: o.Sealed,
		Requirement: o.Requirement, Deadline: acl.FormatTime(time.Now().Add(o.Deadline)), MaxPrice: o.MaxPrice,
		SealingKey: o.Key.Public().SealingString()}
	for _, in := range o.Inputs {
		req.Inputs = append(req.Inputs, in.Name)
	}
	if err := req.Check(); err != nil {
		return nil, err
	}
	deadline := req.DeadlineTime()
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	hc := &http.Client{Timeout: 30 * time.Second}
	var info struct{ Key, Ledger string }
	if err := getJSON(ctx, hc, o.Dispatcher+"/v1/info", &info); err != nil {
		return nil, fmt.Errorf("%w: the dispatcher: %v", ErrNoProvider, err)
	}
	ledgerURL := o.Ledger
	if ledgerURL == "" {
		ledgerURL = info.Ledger
	}
	lc, err := lclient.New(ledgerURL)
	if err != nil {
		return nil, fmt.Errorf("ledger %q: %w", ledgerURL, err)
	}
	se, err := verify.NewEntry(o.Key.Signer(), deal.KindRequest, req)
	if err != nil {
		return nil, err
	}
	if err := postEntry(ctx, hc, o.Dispatcher+"/v1/requests", se.Encode()); err != nil {
		return nil, fmt.Errorf("%w: the dispatcher took no request: %v", ErrNoProvider, err)
	}
	logf("request %s… submitted to %s (deadline %s), recorded on %s", req.ID[:12], o.Dispatcher, req.Deadline, ledgerURL)
	// The live offers are read while the dispatcher decides: the
	// assignment names the offer entry of its node that the ledger
	// checked, and if this read holds that entry it need not be read
	// again once the assignment is known.
	pre := make(chan *lclient.OfferList, 1)
	go func() {
		l, _ := lc.Offers(ctx)
		pre <- l
	}()
	var offers *lclient.OfferList
	prefetched := func() *lclient.OfferList {
		if offers == nil {
			offers = <-pre
		}
		return offers
	}
	tried := map[uint64]bool{}
	var last error
	var failed []string // what went wrong with each assignment tried
	fail := func() error {
		if last == nil {
			last = ctx.Err()
		}
		if len(failed) > 0 {
			return fmt.Errorf("%w before its deadline %s: %v; assignments tried: %s", ErrNoProvider, req.Deadline, last, strings.Join(failed, "; "))
		}
		return fmt.Errorf("%w before its deadline %s: %v", ErrNoProvider, req.Deadline, last)
	}
	var after uint64 // the latest token tried
	for {
		// A long poll: the dispatcher answers as soon as it records an
		// assignment after the latest one tried (or the request ends),
		// or after ticketWait with the ticket as it is.
		var t Ticket
		asked := time.Now()
		acted := false
		if err := getJSON(ctx, hc, fmt.Sprintf("%s/v1/requests/%s?wait=%s&after=%d", o.Dispatcher, req.ID, ticketWait, after), &t); err != nil {
			if ctx.Err() == nil || last == nil {
				last = err
			}
		} else if t.State == "expired" || t.State == "finished" {
			break
		} else if t.State == "assigned" && !tried[t.Token] {
			tried[t.Token] = true
			after, acted = max(after, t.Token), true
			out, err := runAssignment(ctx, lc, o, req, reqm, t.Token, prefetched(), logf)
			if err == nil {
				out.Ledger = ledgerURL
				out.Failovers = []Failover{}
				if mr, err := lc.MarketRequest(ctx, req.ID); err == nil {
					_, out.Failovers = history(mr)
				}
				return out, nil
			}
			last = err
			failed = append(failed, fmt.Sprintf("%d: %v", t.Token, err))
			logf("assignment %d: %v", t.Token, err)
			if errors.Is(err, ErrRefused) {
				// The consumer may fail the assignment itself; the
				// dispatcher then assigns the next candidate.
				f := deal.Failure{Request: req.ID, Token: t.Token, Reason: deal.ReasonAttest, Detail: trim(err.Error())}
				if fe, err := verify.NewEntry(o.Key.Signer(), deal.KindFailed, f); err == nil {
					lc.Append(ctx, fe)
				}
			}
		} else if t.Reason != "" {
			last = errors.New(t.Reason)
		}
		if acted || time.Since(asked) >= ticketWait/2 {
			if ctx.Err() != nil {
				return nil, fail()
			}
			continue
		}
		// An error, or a dispatcher that does not hold the answer back:
		// ask again shortly.
		select {
		case <-ctx.Done():
			return nil, fail()
		case <-time.After(300 * time.Millisecond):
		}
	}
	return nil, fail()
}

// ticketWait is how long the consumer lets the dispatcher hold a ticket
// back (a long poll).
const ticketWait = 5 * time.Second

// runAssignment checks assignment token of req on the ledger and runs it.
// offers, if not nil, is a list of live offers read earlier: the node's
// offer is taken from it if it is the entry the assignment names.
func runAssignment(ctx context.Context, lc *lclient.Client, o RequestOptions, req *deal.Request, reqm *market.Requirement, token uint64, offers *lclient.OfferList, logf func(string, ...any)) (*Outcome, error) {
	mr, err := lc.MarketRequest(ctx, req.ID)
	if err != nil {
		return nil, fmt.Errorf("reading the request on the ledger: %w", err)
	}
	var a *deal.Assignment
	for _, se := range mr.Entries {
		if se.Entry.Kind == deal.KindAssigned {
			if x, err := deal.DecodeAssignment(se.Entry.Body); err == nil && x.Token == token && x.Request == req.ID {
				a = x
			}
		}
	}
	if a == nil || mr.State.Token != token || mr.State.Live == 0 {
		return nil, fmt.Errorf("assignment %d is not live on the ledger", token)
	}
	offer := offerOf(offers, a)
	if offer == nil {
		l, err := lc.Offers(ctx)
		if err != nil {
			return nil, err
		}
		if offer = offerOf(l, a); offer == nil {
			for i := range l.Offers {
				if l.Offers[i].Node == a.Node {
					offer = &l.Offers[i]
				}
			}
		}
	}
	if offer == nil || offer.Endpoint == "" {
		return nil, fmt.Errorf("node %s has no live offer with an endpoint", a.Node)
	}
	pol, err := CheckPolicy(a, req, o.Key.Public(), reqm, &offer.Offer)
	if err != nil {
		return nil, fmt.Errorf("%w: the dispatcher's policy: %v", ErrRefused, err)
	}
	logf("assignment %d: node %s… session %s…; the policy the dispatcher wrote checks out (program, sole reader, classes, expiry, rank)", token, a.Node[:20], a.Session[:8])
	pk, _ := protocol.ParseEd25519Key(a.Node)
	c, err := client.Dial(ctx, offer.Endpoint, client.WithPlatformKeys(pk))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	as, err := c.Attest(ctx, a.Session, pol)
	if err != nil {
		if errors.Is(err, client.ErrAttestation) || errors.Is(err, client.ErrPolicyMismatch) || errors.Is(err, client.ErrNodeIdentity) {
			return nil, fmt.Errorf("%w: the isolate: %v", ErrRefused, err)
		}
		return nil, err
	}
	defer as.CloseIdleConnections()
	cl := as.Claims()
	v := market.Verified{Class: string(cl.Class), Measurement: hex.EncodeToString(cl.Measurement), Debug: cl.Debug}
	if ok, err := reqm.Satisfied(&offer.Offer, v); err != nil || !ok {
		return nil, fmt.Errorf("%w: the isolate's verified claims (class %s, debug %v) do not satisfy the requirement", ErrRefused, v.Class, v.Debug)
	}
	for _, iso := range pol.Isolates {
		if ok, _ := reqm.Satisfied(&offer.Offer, market.Verified{Class: iso.Class, Measurement: v.Measurement}); !ok {
			return nil, fmt.Errorf("%w: the policy admits isolate class %s, outside the requirement", ErrRefused, iso.Class)
		}
	}
	logf("assignment %d: attested the isolate myself: class %s, measurement %.16s…", token, v.Class, v.Measurement)
	start := time.Now()
	for _, in := range o.Inputs {
		if _, err := as.UploadInput(ctx, o.Key, in.Name, in.Data); err != nil {
			return nil, fmt.Errorf("sending input %s: %w", in.Name, err)
		}
	}
	wctx, cancel := context.WithDeadline(ctx, parseTime(a.RunDeadline).Add(5*time.Second))
	defer cancel()
	st, err := as.Wait(wctx)
	if err != nil {
		return nil, fmt.Errorf("waiting for the run: %w", err)
	}
	if st.Report == nil || st.Reason != "" {
		return nil, fmt.Errorf("the run failed on %s: %s", a.Node, st.Reason)
	}
	outs := map[string][]byte{}
	for _, out := range pol.Outputs {
		b, err := as.Result(ctx, o.Key, out.Name)
		if err != nil {
			return nil, fmt.Errorf("result %s: %w", out.Name, err)
		}
		outs[out.Name] = b
	}
	observed := time.Since(start)
	chosen, _ := a.Chosen()
	acct := deal.Account{Request: req.ID, Token: token, Provider: a.Node, Class: v.Class,
		CPUMillis: uint64(max(st.Report.GetCpuMs(), 0)), WallMillis: uint64(max(st.Report.WallMs, 0)), ObservedWallMillis: uint64(observed.Milliseconds()), Price: chosen.Price}
	se, err := verify.NewEntry(o.Key.Signer(), deal.KindAccounted, acct)
	if err != nil {
		return nil, err
	}
	// The result counts only if the ledger takes the accounting under
	// this token: a result of an assignment failed meanwhile is dropped.
	var rc verify.Receipt
	for try := 0; ; try++ {
		if rc, err = lc.Append(ctx, se); err == nil {
			break
		}
		// A refusal is final (the token is no longer live); a ledger
		// that did not answer is asked again with the same entry.
		var rej *verify.RejectedError
		if errors.As(err, &rej) && rej.Code == verify.CodeReplay && rej.SameEntry && rej.HeldBy != nil {
			err = nil
			rc.Index = *rej.HeldBy
			break
		}
		if errors.As(err, &rej) || try == 2 || ctx.Err() != nil {
			return nil, fmt.Errorf("the ledger did not take the accounting of assignment %d, so its result is not delivered: %w", token, err)
		}
		time.Sleep(time.Second)
	}
	return &Outcome{Request: req.ID, Provider: a.Node, Class: v.Class, Measurement: v.Measurement, Session: a.Session, Token: token,
		CPUMillis: acct.CPUMillis, WallMillis: acct.WallMillis, ObservedMillis: acct.ObservedWallMillis, Price: chosen.Price, Accounted: rc.Index, Outputs: outs}, nil
}

// offerOf finds in l the offer entry of a's node that a names among its
// candidates, or nil.
func offerOf(l *lclient.OfferList, a *deal.Assignment) *lclient.LiveOffer {
	c, ok := a.Chosen()
	if l == nil || !ok {
		return nil
	}
	for i := range l.Offers {
		if o := &l.Offers[i]; o.Node == a.Node && o.Index == c.Offer {
			return o
		}
	}
	return nil
}

// CheckPolicy checks the policy a dispatcher wrote for assignment a of
// req, as the consumer holding key must before sending anything: the
// program is the requested one (plaintext hash, sealed digest); the
// consumer is the only principal, provides exactly the request's inputs
// and is the only reader of every output; no isolate entry allows debug;
// the policy expires by the request's deadline; the node is the first of
// market.Rank over the assignment's candidates, less the skipped ones;
// every isolate class it admits could satisfy the requirement (and the
// class the isolate proves is judged again once its evidence is verified).
func CheckPolicy(a *deal.Assignment, req *deal.Request, key keys.PublicKey, reqm *market.Requirement, offer *lclient.Offer) (*policy.Policy, error) {
	pol, err := policy.Parse(a.Policy)
	if err != nil {
		return nil, err
	}
	if pol.HashHex() != a.PolicyHash {
		return nil, fmt.Errorf("the policy hashes to %s, the assignment names %s", pol.HashHex(), a.PolicyHash)
	}
	if len(pol.Programs) != 1 || pol.Programs[0].SHA256 != req.ProgramSHA256 || pol.Programs[0].Sealed == nil || pol.Programs[0].Sealed.Digest != req.Sealed {
		return nil, fmt.Errorf("the program is not the requested sealed program %s (sha256 %s)", req.Sealed, req.ProgramSHA256)
	}
	if len(pol.Principals) != 1 {
		return nil, fmt.Errorf("the policy names %d principals; the consumer must be the only one", len(pol.Principals))
	}
	me := pol.Principals[0]
	if me.SigningKey != key.SigningString() || me.SealingKey != key.SealingString() {
		return nil, errors.New("the policy's principal is not the consumer's keys")
	}
	var names []string
	for _, in := range pol.Inputs {
		if in.Provider != me.ID {
			return nil, fmt.Errorf("input %s is provided by %s, not the consumer", in.Name, in.Provider)
		}
		names = append(names, in.Name)
	}
	if !sameSet(names, req.Inputs) {
		return nil, fmt.Errorf("the policy's inputs %v are not the request's %v", names, req.Inputs)
	}
	for _, out := range pol.Outputs {
		if len(out.Readers) != 1 || out.Readers[0] != me.ID {
			return nil, fmt.Errorf("output %s is readable by %v: the consumer must be its only reader", out.Name, out.Readers)
		}
	}
	for _, iso := range pol.Isolates {
		if iso.AllowDebug {
			return nil, fmt.Errorf("isolate class %s allows debug", iso.Class)
		}
		if !classMaySatisfy(reqm, offer, iso.Class) {
			return nil, fmt.Errorf("the policy admits isolate class %s, outside the requirement", iso.Class)
		}
	}
	if pol.Expires.After(req.DeadlineTime()) {
		return nil, fmt.Errorf("the policy expires %s, after the request's deadline %s", pol.Expires.UTC().Format(time.RFC3339), req.Deadline)
	}
	var cands []market.Candidate
	for _, c := range a.Candidates {
		if slices.ContainsFunc(a.Skipped, func(s deal.Skipped) bool { return s.Node == c.Node }) {
			continue
		}
		p, err := market.Price(&lclient.Offer{Price: c.Price})
		if err != nil {
			return nil, err
		}
		recent := make([]bool, c.Failures)
		for i := range recent {
			recent[i] = true
		}
		cands = append(cands, market.Candidate{Node: c.Node, Price: p, Recent: recent})
	}
	if r := market.Rank(req.ID, cands); len(r) == 0 || r[0].Node != a.Node {
		return nil, fmt.Errorf("node %s is not the first of the ranking the assignment's own inputs give", a.Node)
	}
	if offer.Price != "" && req.MaxPrice != "" && deal.DecimalLess(req.MaxPrice, offer.Price) {
		return nil, fmt.Errorf("the node's price %s is above the request's maximum %s", offer.Price, req.MaxPrice)
	}
	return pol, nil
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

const maxTicket = 1 << 20

func getJSON(ctx context.Context, hc *http.Client, url string, v any) error {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	return doJSON(hc, r, v)
}

func postEntry(ctx context.Context, hc *http.Client, url string, body []byte) error {
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	r.Header.Set("Content-Type", "application/json")
	return doJSON(hc, r, nil)
}

func doJSON(hc *http.Client, r *http.Request, v any) error {
	res, err := hc.Do(r)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxTicket+1))
	if err != nil {
		return err
	}
	if len(b) > maxTicket {
		return fmt.Errorf("%s: answer of more than %d bytes", r.URL.Path, maxTicket)
	}
	if res.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s: %s", res.Status, e.Error)
		}
		return fmt.Errorf("%s: %.200s", res.Status, b)
	}
	if v == nil {
		return nil
	}
	return json.Unmarshal(b, v)
}
