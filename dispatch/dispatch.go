// Package dispatch is the marketplace's dispatcher: it matches consumers'
// requests (market.request entries) to providers' live offers on
// evidence it fetches and verifies itself, records each assignment on the
// ledger under a fencing token, asks the chosen node to open a session
// for a policy it writes from the request, grants that session the sealed
// program's key for a short time under the innovator's delegation, and
// fails a provider over to the next when it does not attest, dies or
// misses the run's deadline. It keeps no secret and no plaintext, and no
// state of its own: everything it knows it reads back from the ledger, so
// a restarted dispatcher resumes where it stopped and two dispatchers on
// one ledger never assign one request twice (docs/marketplace.md).
package dispatch

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/internal/httpguard"
	"github.com/cloisterhq/cloister/internal/httpmetrics"
	"github.com/cloisterhq/cloister/internal/probe"
	"github.com/cloisterhq/cloister/ledger/acl"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/deal"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/market"
	"github.com/cloisterhq/cloister/policy"
)

// Listing is a sealed program the dispatcher may run: what its innovator
// gives the dispatcher (cloister dispatch --program FILE). Delegation is
// the index of the innovator's acl.delegated entry naming the dispatcher.
type Listing struct {
	Name       string               `json:"name"`
	SHA256     string               `json:"sha256"`
	Sealed     policy.SealedProgram `json:"sealed"`
	Outputs    []string             `json:"outputs"`
	Limits     policy.Limits        `json:"limits"`
	Delegation uint64               `json:"delegation"`
}

// Options configure a Dispatcher.
type Options struct {
	Ledger    *lclient.Client
	LedgerURL string // told to consumers, who may check the ledger themselves
	Key       ed25519.PrivateKey
	Programs  []Listing
	Logger    *slog.Logger
	// Poll is how often live assignments are checked (default 500 ms).
	Poll time.Duration
	// DeadAfter is how long a node may stay unreachable before its
	// assignment fails (default 3 s).
	DeadAfter time.Duration
	// RunShare is the share of the time left before the request's
	// deadline one assignment may take (default 0.5), so that a failover
	// still has time.
	RunShare float64
	// MaxCandidates bounds the candidates ranked per assignment (default 16).
	MaxCandidates int
	// MaxOpen bounds the requests driven at once (default 1024), and
	// MaxPerConsumer those of one consumer (default 16); more are refused
	// with the limit named, or left on the ledger for later.
	MaxOpen, MaxPerConsumer int
}

// Dispatcher drives requests. Create with New, serve Handler, call Run.
type Dispatcher struct {
	o   Options
	pub string
	log *slog.Logger

	mu      sync.Mutex
	driving map[string]*driveState
	tickets map[string]*Ticket
	grants  map[string]uint64 // request id ‖ token -> acl.granted index (a cache: findGrant reads the ledger)
	// granted holds, per delegation, the times (Unix seconds) of this
	// dispatcher's grants under it within the rate's window, rebuilt from
	// the ledger when it first judges the delegation (rate.go): its own
	// guard of the delegation's rate, so that it does not assign a run
	// whose grant the ledger would refuse.
	granted  map[uint64][]int64
	counted  map[uint64]bool // delegations whose grants were read back from the ledger
	wake     chan string
	viewAt   time.Time
	view     *marketView                    // the ledger's live offers, records and PIEE faults, as last read
	reading  bool                           // a read of them is under way
	limits   map[uint64]acl.Limits          // delegations' limits (an entry never changes)
	compiled map[string]*market.Requirement // requirements compiled, by source (compile)
	nodes    map[string]*client.Client      // one client (one TLS connection) per node and endpoint
	changed  map[string]chan struct{}       // closed when a request's assignment changes here
	conns    httpguard.Stats
	metrics  *httpmetrics.Metrics

	// vouchAll, set only by tests, makes a lying dispatcher: it assigns
	// the best candidate whatever its verified claims are.
	vouchAll bool
}

// Failover is one failed assignment as a consumer sees it.
type Failover struct {
	Token  uint64 `json:"token"`
	Node   string `json:"node"`
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// Ticket is what GET /v1/requests/{id} answers: the request's current
// assignment (node, endpoint, session, policy written for it) and the
// ledger it is recorded on. The consumer checks all of it itself.
type Ticket struct {
	ID        string          `json:"id"`
	Ledger    string          `json:"ledger,omitempty"`
	State     string          `json:"state"` // pending, assigned, finished, expired
	Token     uint64          `json:"token,omitempty"`
	Entry     uint64          `json:"entry,omitempty"` // the market.assigned entry
	Node      string          `json:"node,omitempty"`
	Endpoint  string          `json:"endpoint,omitempty"`
	Session   string          `json:"session,omitempty"`
	Class     string          `json:"class,omitempty"`
	Policy    json.RawMessage `json:"policy,omitempty"`
	Failovers []Failover      `json:"failovers,omitempty"`
	Reason    string          `json:"reason,omitempty"` // why it is still pending
}

// New checks opts and makes a Dispatcher.
func New(o Options) (*Dispatcher, error) {
	if o.Ledger == nil || len(o.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("dispatch: a ledger and a signing key are required")
	}
	for i, l := range o.Programs {
		if len(l.SHA256) != 64 || l.Sealed.Digest == "" || len(l.Outputs) == 0 {
			return nil, fmt.Errorf("dispatch: program %d: want sha256, sealed and outputs", i)
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Poll <= 0 {
		o.Poll = 500 * time.Millisecond
	}
	if o.DeadAfter <= 0 {
		o.DeadAfter = 3 * time.Second
	}
	if o.RunShare <= 0 || o.RunShare > 1 {
		o.RunShare = 0.5
	}
	if o.MaxCandidates <= 0 {
		o.MaxCandidates = 16
	}
	if o.MaxOpen <= 0 {
		o.MaxOpen = 1024
	}
	if o.MaxPerConsumer <= 0 {
		o.MaxPerConsumer = 16
	}
	d := &Dispatcher{o: o, pub: protocol.FormatEd25519Key(o.Key.Public().(ed25519.PublicKey)), log: o.Logger,
		driving: map[string]*driveState{}, tickets: map[string]*Ticket{}, grants: map[string]uint64{}, granted: map[uint64][]int64{}, counted: map[uint64]bool{}, wake: make(chan string, 64),
		limits: map[uint64]acl.Limits{}, compiled: map[string]*market.Requirement{}, nodes: map[string]*client.Client{}, changed: map[string]chan struct{}{}}
	d.metrics = d.newMetrics()
	return d, nil
}

// Key returns the dispatcher's signing key, as delegations name it.
func (d *Dispatcher) Key() string { return d.pub }

// maxRequestBody bounds POST /v1/requests: one signed entry.
const maxRequestBody = verify.MaxEntryBytes

// Handler serves the dispatcher's API:
//
//	POST /v1/requests        a consumer-signed market.request entry → {"id"}
//	GET  /v1/requests/{id}   the request's Ticket
//	GET  /v1/info            {"key","ledger"}
//	GET  /healthz, /readyz   probes (package probe)
//	GET  /metrics            Prometheus metrics (package httpmetrics)
func (d *Dispatcher) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/requests", d.handleSubmit)
	mux.HandleFunc("GET /v1/requests/{id}", d.handleTicket)
	mux.HandleFunc("GET /v1/info", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"key": d.pub, "ledger": d.o.LedgerURL})
	})
	mux.HandleFunc("GET /healthz", probe.Healthz)
	// Ready when its ledger answers and is caught up: every decision it
	// makes is read from, and recorded on, that ledger.
	mux.HandleFunc("GET /readyz", (&probe.Ready{Check: func(ctx context.Context) []string { return probe.Ledger(ctx, d.o.Ledger) }}).Readyz)
	return d.metrics.Serve(mux)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]string{"error": fmt.Sprintf(format, args...)})
}

func (d *Dispatcher) handleSubmit(w http.ResponseWriter, r *http.Request) {
	b, err := readBody(r, maxRequestBody)
	if err != nil {
		writeErr(w, http.StatusRequestEntityTooLarge, "%v", err)
		return
	}
	se, err := verify.DecodeEntry(b)
	if err == nil {
		err = se.VerifySignature()
	}
	if err != nil {
		writeErr(w, http.StatusBadRequest, "request entry: %v", err)
		return
	}
	if se.Entry.Kind != deal.KindRequest {
		writeErr(w, http.StatusBadRequest, "request entry: a %s entry, want %s", se.Entry.Kind, deal.KindRequest)
		return
	}
	req, err := deal.DecodeRequest(se.Entry.Body)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	if _, err := d.compile(req.Requirement); err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	if _, ok := d.listing(req); !ok {
		writeErr(w, http.StatusNotFound, "this dispatcher lists no sealed program %s with sha256 %s", req.Sealed, req.ProgramSHA256)
		return
	}
	d.mu.Lock()
	why := d.admit(req.ID, se.Entry.Submitter)
	d.mu.Unlock()
	if why != "" {
		writeErr(w, http.StatusTooManyRequests, "%s", why)
		return
	}
	// Authenticated by the consumer's signature, bounded by the ledger's
	// own admission: the dispatcher only relays it.
	if _, err := d.o.Ledger.Append(r.Context(), se); err != nil {
		var rej *verify.RejectedError
		if !errors.As(err, &rej) || rej.Code != verify.CodeReplay || rej.SameEntry != true {
			writeErr(w, http.StatusBadRequest, "the ledger refused the request: %v", err)
			return
		}
	}
	if d.drive(req.ID, se.Entry.Submitter) {
		d.mu.Lock()
		if s := d.driving[req.ID]; s != nil && !s.running {
			s.fresh = req
		}
		d.mu.Unlock()
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"id": req.ID})
}

// maxTicketWait bounds how long GET /v1/requests/{id}?wait= holds an
// answer back.
const maxTicketWait = 10 * time.Second

// handleTicket answers a request's ticket. With ?wait=D (at most
// maxTicketWait) and ?after=TOKEN it answers once the ticket says
// something the consumer has not seen — an assignment with a later token
// than after, or the request finished or expired — or D has passed: a
// long poll, so the consumer learns of an assignment when this dispatcher
// records it rather than at its next poll. Changes made by others (another
// dispatcher, the consumer's own failure entry) are seen by reading the
// ledger again every ticketRecheck while waiting.
func (d *Dispatcher) handleTicket(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	after, _ := strconv.ParseUint(q.Get("after"), 10, 64)
	wait, _ := time.ParseDuration(q.Get("wait"))
	wait = min(max(wait, 0), maxTicketWait)
	until := time.Now().Add(wait)
	for {
		t, status, err := d.ticket(r.Context(), id)
		if err != nil {
			writeErr(w, status, "%v", err)
			return
		}
		left := time.Until(until)
		if t.State == "finished" || t.State == "expired" {
			d.notify(id) // nothing more will change: wake and forget its waiters
		}
		if left <= 0 || t.State == "finished" || t.State == "expired" || (t.State == "assigned" && t.Token > after) {
			writeJSON(w, http.StatusOK, t)
			return
		}
		// A change between the reading and here is seen at the recheck.
		select {
		case <-d.changes(id):
		case <-time.After(min(left, ticketRecheck)):
		case <-r.Context().Done():
			return
		}
	}
}

// ticketRecheck is how often a waiting ticket reads the ledger again;
// maxWaited bounds the requests whose changes are waited on.
const (
	ticketRecheck = 250 * time.Millisecond
	maxWaited     = 4096
)

// ticket reads request id's ticket, or the HTTP status and error to
// answer.
func (d *Dispatcher) ticket(ctx context.Context, id string) (*Ticket, int, error) {
	mr, err := d.o.Ledger.MarketRequest(ctx, id)
	if errors.Is(err, lclient.ErrNotFound) {
		return nil, http.StatusNotFound, fmt.Errorf("no request %.80s on the ledger", id)
	}
	if err != nil {
		return nil, http.StatusBadGateway, fmt.Errorf("reading the ledger: %v", err)
	}
	t, err := d.ticketOf(ctx, mr)
	if err != nil {
		return nil, http.StatusBadGateway, err
	}
	d.mu.Lock()
	if p := d.tickets[id]; p != nil && t.State == "pending" {
		t.Reason = p.Reason
	}
	d.mu.Unlock()
	return t, http.StatusOK, nil
}

// changes returns a channel closed at request id's next change here
// (notify); nil (never ready) when maxWaited requests are waited on
// already, which leaves those tickets to their rechecks.
func (d *Dispatcher) changes(id string) <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	ch := d.changed[id]
	if ch == nil {
		if len(d.changed) >= maxWaited {
			return nil
		}
		ch = make(chan struct{})
		d.changed[id] = ch
	}
	return ch
}

// notify wakes the tickets waiting on request id.
func (d *Dispatcher) notify(id string) {
	d.mu.Lock()
	if ch := d.changed[id]; ch != nil {
		close(ch)
		delete(d.changed, id)
	}
	d.mu.Unlock()
}

// ticketOf builds a request's ticket from its ledger entries alone, so
// that any dispatcher (a restarted one included) answers the same.
func (d *Dispatcher) ticketOf(ctx context.Context, mr *lclient.MarketRequest) (*Ticket, error) {
	st := mr.State
	t := &Ticket{ID: st.ID, Ledger: d.o.LedgerURL, State: "pending", Token: st.Token}
	byToken, fos := history(mr)
	t.Failovers = fos
	switch {
	case st.Finished != 0:
		t.State = "finished"
	case !time.Now().Before(parseTime(st.Deadline)):
		t.State = "expired"
	case st.Live != 0:
		t.State = "assigned"
	}
	if a := byToken[st.Token]; a != nil && st.Live != 0 {
		t.Entry, t.Node, t.Session, t.Class, t.Policy = st.Live, a.Node, a.Session, a.Class, a.Policy
		t.Endpoint = d.endpointOf(ctx, a.Node)
	}
	return t, nil
}

// history reads a request's assignments by token and its failovers from
// its ledger entries.
func history(mr *lclient.MarketRequest) (map[uint64]*deal.Assignment, []Failover) {
	byToken := map[uint64]*deal.Assignment{}
	fos := []Failover{}
	for _, se := range mr.Entries {
		switch se.Entry.Kind {
		case deal.KindAssigned:
			if a, err := deal.DecodeAssignment(se.Entry.Body); err == nil {
				byToken[a.Token] = a
			}
		case deal.KindFailed:
			if f, err := deal.DecodeFailure(se.Entry.Body); err == nil {
				fo := Failover{Token: f.Token, Reason: f.Reason, Detail: f.Detail}
				if a := byToken[f.Token]; a != nil {
					fo.Node = a.Node
				}
				fos = append(fos, fo)
			}
		}
	}
	return byToken, fos
}

func parseTime(s string) time.Time { t, _ := acl.ParseTime(s); return t }

// liveView is what a decision ranks on: the live offers, the providers'
// records and their PIEE faults. One less than offersMaxAge old is taken
// as it is, and from offersRefresh on it is read again in the background;
// one older, or none, is read at once. A decision that goes on with a
// copy the ledger has moved past is refused: a candidate whose offer was
// renewed, or whose record changed its count of failures, is not what the
// state machine holds, and it refuses the assignment; offersCurrent or
// recordsCurrent sees which, drops the copy, and the request is decided
// again on a fresh read (decisions 0119, 0165). The client checks only
// the signatures of entries it has not seen (ledger/client.WithSignatureCache),
// so a re-read costs the transfer and decoding.
//
// A decision calls it with refresh false and calls refreshView once its
// entries are signed, so that the read (the ledger serving it, this
// process decoding it) runs while the entries are committed rather than
// while the chosen node creates the session, on the same cores.
func (d *Dispatcher) liveView(ctx context.Context, refresh bool) (*marketView, error) {
	d.mu.Lock()
	v, age := d.view, time.Since(d.viewAt)
	d.mu.Unlock()
	if v == nil || age >= offersMaxAge {
		return d.readView(ctx)
	}
	if refresh {
		d.refreshView(ctx)
	}
	return v, nil
}

// refreshView starts a read of the view in the background if the one held
// is offersRefresh old or more and no read is under way.
func (d *Dispatcher) refreshView(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.view == nil || time.Since(d.viewAt) < offersRefresh || d.reading {
		return
	}
	d.reading = true
	go func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		d.readView(rctx)
	}()
}

// marketView is one reading of the ledger's market: the live offers, each
// provider's recent outcomes (true a failure, newest first) and each
// node's PIEE faults (challenges failed plus verifications outvoted).
type marketView struct {
	offers  *lclient.OfferList
	records map[string][]bool
	faults  map[string]uint64
}

// offersRefresh is the age from which the view is read again in the
// background, and offersMaxAge the oldest a decision starts from.
const (
	offersRefresh = 500 * time.Millisecond
	offersMaxAge  = 2 * time.Second
)

// readView reads the live offers, the records and the PIEE scores from
// the ledger, side by side, and keeps them. Without the PIEE scores the
// view ranks by the market alone (pieeFaults).
func (d *Dispatcher) readView(ctx context.Context) (*marketView, error) {
	var (
		recs    *lclient.MarketRecords
		recsErr error
		faults  map[string]uint64
		wg      sync.WaitGroup
	)
	wg.Go(func() { recs, recsErr = d.o.Ledger.MarketRecords(ctx) })
	wg.Go(func() { faults = d.pieeFaults(ctx) })
	l, err := d.o.Ledger.Offers(ctx)
	wg.Wait()
	if err != nil {
		err = fmt.Errorf("reading offers: %w", err)
	} else if recsErr != nil {
		err = fmt.Errorf("reading records: %w", recsErr)
	}
	var v *marketView
	if err == nil {
		v = &marketView{offers: l, records: make(map[string][]bool, len(recs.Records)), faults: faults}
		for _, r := range recs.Records {
			v.records[r.Node] = r.Recent
		}
	}
	d.mu.Lock()
	d.reading = false
	if v != nil {
		d.view, d.viewAt = v, time.Now()
	}
	d.mu.Unlock()
	return v, err
}

// dropView forgets the view, so that the next decision reads it afresh.
func (d *Dispatcher) dropView() {
	d.mu.Lock()
	d.view = nil
	d.mu.Unlock()
}

func (d *Dispatcher) endpointOf(ctx context.Context, node string) string {
	v, err := d.liveView(ctx, true)
	if err != nil {
		return ""
	}
	for _, o := range v.offers.Offers {
		if o.Node == node {
			return o.Endpoint
		}
	}
	return ""
}

func (d *Dispatcher) listing(r *deal.Request) (Listing, bool) {
	for _, l := range d.o.Programs {
		if l.SHA256 == r.ProgramSHA256 && l.Sealed.Digest == r.Sealed {
			return l, true
		}
	}
	return Listing{}, false
}

// Run resumes every open request the ledger holds, then keeps looking
// for new ones (submitted here or to another dispatcher) until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) error {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		if open, err := d.o.Ledger.MarketOpen(ctx); err == nil {
			for _, r := range open.Requests {
				d.drive(r.ID, r.Consumer)
			}
		} else if ctx.Err() == nil {
			d.log.Warn("listing open requests", "err", err)
		}
		d.mu.Lock()
		ids := make([]string, 0, len(d.driving))
		for id := range d.driving {
			ids = append(ids, id)
		}
		d.mu.Unlock()
		for _, id := range ids {
			d.startDriver(ctx, id)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case id := <-d.wake:
			d.startDriver(ctx, id)
		}
	}
}

// driveState is one request this dispatcher drives.
type driveState struct {
	consumer string
	running  bool
	// fresh is a request this dispatcher has just relayed to the ledger:
	// its first decision starts from the request as committed (no
	// assignment, no failure yet) without reading it back. Were it
	// stale — another dispatcher assigning it meanwhile — the ledger
	// would refuse the assignment's fencing token.
	fresh *deal.Request
}

// admit reports why request id of consumer may not be driven now (the
// limits on requests driven in total and per consumer), or "" if it may.
// Call with d.mu held.
func (d *Dispatcher) admit(id, consumer string) string {
	if _, ok := d.driving[id]; ok {
		return ""
	}
	if len(d.driving) >= d.o.MaxOpen {
		return fmt.Sprintf("this dispatcher drives %d requests, its limit (--max-open); try later", d.o.MaxOpen)
	}
	n := 0
	for _, s := range d.driving {
		if s.consumer == consumer {
			n++
		}
	}
	if n >= d.o.MaxPerConsumer {
		return fmt.Sprintf("consumer %s has %d open requests here, the limit per consumer", consumer, d.o.MaxPerConsumer)
	}
	return ""
}

// drive marks request id of consumer to be driven, if the limits allow.
func (d *Dispatcher) drive(id, consumer string) bool {
	d.mu.Lock()
	_, known := d.driving[id]
	if !known {
		if d.admit(id, consumer) != "" {
			d.mu.Unlock()
			return false
		}
		d.driving[id] = &driveState{consumer: consumer}
	}
	d.mu.Unlock()
	if !known {
		select {
		case d.wake <- id:
		default:
		}
	}
	return true
}

func (d *Dispatcher) startDriver(ctx context.Context, id string) {
	d.mu.Lock()
	s, known := d.driving[id]
	if !known || s.running {
		d.mu.Unlock()
		return
	}
	s.running = true
	d.mu.Unlock()
	go func() {
		done := d.driveOne(ctx, id)
		d.mu.Lock()
		if done {
			// Finished or past its deadline: the ledger no longer lists
			// it as open, so it is not driven again.
			delete(d.driving, id)
			delete(d.tickets, id)
			if ch := d.changed[id]; ch != nil {
				close(ch)
				delete(d.changed, id)
			}
		} else {
			s.running = false
		}
		d.mu.Unlock()
	}()
}

func (d *Dispatcher) setReason(id, reason string) {
	d.mu.Lock()
	d.tickets[id] = &Ticket{ID: id, Reason: reason}
	d.mu.Unlock()
}

// driveOne drives request id until it is finished or past its deadline
// (true), or ctx ends (false).
func (d *Dispatcher) driveOne(ctx context.Context, id string) bool {
	var unreachableSince time.Time
	d.mu.Lock()
	var fresh *deal.Request
	var consumer string
	if s := d.driving[id]; s != nil {
		fresh, s.fresh, consumer = s.fresh, nil, s.consumer
	}
	d.mu.Unlock()
	if fresh != nil {
		st := lclient.RequestState{ID: id, Consumer: consumer, Deadline: fresh.Deadline, MaxPrice: fresh.MaxPrice}
		if err := d.assign(ctx, fresh, &st, true); err != nil {
			d.log.Info("first decision not made; reading the request back", "id", id, "err", err)
		}
	}
	for ctx.Err() == nil {
		mr, err := d.o.Ledger.MarketRequest(ctx, id)
		if err != nil {
			d.log.Warn("reading request", "id", id, "err", err)
			sleep(ctx, d.o.Poll)
			continue
		}
		st := mr.State
		now := time.Now()
		if st.Finished != 0 || !now.Before(parseTime(st.Deadline)) {
			if st.Live != 0 && st.Finished == 0 && st.Dispatcher == d.pub {
				d.revokeGrant(ctx, st)
			}
			return true
		}
		req := requestOf(mr)
		if req == nil {
			return true
		}
		if st.Live == 0 {
			unreachableSince = time.Time{}
			if err := d.assign(ctx, req, &st, false); errors.Is(err, errStaleOffers) || errors.Is(err, errStaleRecords) {
				// Decide again at once, on offers and records read afresh.
				d.log.Info("deciding again: a candidate's offer or record changed", "id", id, "err", err)
				continue
			} else if err != nil {
				d.setReason(id, err.Error())
				d.log.Info("request not assigned yet", "id", id, "err", err)
				sleep(ctx, 4*d.o.Poll)
			}
			continue
		}
		// A live assignment: its run deadline binds whoever made it.
		if !now.Before(parseTime(st.RunDeadline)) {
			d.fail(ctx, st, deal.ReasonDeadline, "the run passed its deadline "+st.RunDeadline)
			continue
		}
		if st.Dispatcher != d.pub {
			sleep(ctx, d.o.Poll)
			continue
		}
		reason, detail := d.check(ctx, st)
		switch {
		case reason == "":
			unreachableSince = time.Time{}
		case reason == deal.ReasonUnreachable:
			if unreachableSince.IsZero() {
				unreachableSince = now
			} else if now.Sub(unreachableSince) >= d.o.DeadAfter {
				d.fail(ctx, st, reason, detail)
				unreachableSince = time.Time{}
				continue
			}
		default:
			d.fail(ctx, st, reason, detail)
			continue
		}
		sleep(ctx, d.o.Poll)
	}
	return false
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func requestOf(mr *lclient.MarketRequest) *deal.Request {
	for _, se := range mr.Entries {
		if se.Entry.Kind == deal.KindRequest {
			if r, err := deal.DecodeRequest(se.Entry.Body); err == nil && r.ID == mr.State.ID && se.Entry.Submitter == mr.State.Consumer {
				return r
			}
		}
	}
	return nil
}

// check looks at the live assignment's session on its node: "" while it
// provisions or runs or after it finished; unreachable when the node does
// not answer; refused when the session failed there.
func (d *Dispatcher) check(ctx context.Context, st lclient.RequestState) (reason, detail string) {
	ep := d.endpointOf(ctx, st.Node)
	if ep == "" {
		return deal.ReasonUnreachable, "the node has no live offer"
	}
	pk, err := protocol.ParseEd25519Key(st.Node)
	if err != nil {
		return deal.ReasonRefused, err.Error()
	}
	c, err := d.nodeClient(st.Node, ep, pk)
	if err != nil {
		return deal.ReasonUnreachable, err.Error()
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := c.Status(cctx, st.Session, 0)
	if err != nil {
		d.dropNode(st.Node, ep)
		return deal.ReasonUnreachable, err.Error()
	}
	if s.State.String() == "SESSION_STATE_FAILED" || s.State.String() == "SESSION_STATE_CLOSED" {
		return deal.ReasonRefused, "the session " + strings.ToLower(strings.TrimPrefix(s.State.String(), "SESSION_STATE_")) + ": " + s.Reason
	}
	return "", ""
}

// fail records the live assignment's failure and revokes its grant.
func (d *Dispatcher) fail(ctx context.Context, st lclient.RequestState, reason, detail string) {
	if len(detail) > deal.MaxReason {
		detail = detail[:deal.MaxReason]
	}
	f := deal.Failure{Request: st.ID, Token: st.Token, Reason: reason, Detail: detail}
	if _, err := d.append(ctx, deal.KindFailed, f); err != nil {
		d.log.Warn("failing an assignment", "id", st.ID, "token", st.Token, "err", err)
		return
	}
	d.log.Info("assignment failed over", "id", st.ID, "token", st.Token, "node", st.Node, "reason", reason, "detail", detail)
	d.notify(st.ID)
	if st.Dispatcher == d.pub {
		d.revokeGrant(ctx, st)
	}
}

// revokeGrant revokes the grant this dispatcher made for the live
// assignment of st: the index it kept, or, after a restart, the one it
// finds on the ledger after the assignment entry.
func (d *Dispatcher) revokeGrant(ctx context.Context, st lclient.RequestState) {
	key := fmt.Sprint(st.ID, st.Token)
	d.mu.Lock()
	gi, ok := d.grants[key]
	delete(d.grants, key)
	d.mu.Unlock()
	if !ok {
		if gi, ok = d.findGrant(ctx, st); !ok {
			return
		}
	}
	d.revoke(ctx, st.ID, st.Token, gi)
}

// revoke revokes grant gi, made for token of request id.
func (d *Dispatcher) revoke(ctx context.Context, id string, token, gi uint64) {
	if _, err := d.append(ctx, acl.KindRevoked, acl.Revocation{Grant: &gi}); err != nil {
		d.log.Warn("revoking a grant", "grant", gi, "err", err)
		return
	}
	d.log.Info("grant revoked", "id", id, "token", token, "grant", gi)
}

// grantSearch bounds how far after an assignment its grant is looked for.
const grantSearch = 5000

// findGrant looks for this dispatcher's acl.granted entry naming the
// assignment's node and session, in the entries after the assignment.
func (d *Dispatcher) findGrant(ctx context.Context, st lclient.RequestState) (uint64, bool) {
	if st.Live == 0 || st.Session == "" {
		return 0, false
	}
	for from := st.Live + 1; from <= st.Live+grantSearch; {
		page, err := d.o.Ledger.Entries(ctx, from, 200)
		if err != nil || len(page.Entries) == 0 {
			return 0, false
		}
		for _, e := range page.Entries {
			se := e.Signed
			if se.Entry.Kind != acl.KindGranted || se.Entry.Submitter != d.pub {
				continue
			}
			if g, err := acl.DecodeGrant(se.Entry.Body); err == nil && g.Grantee.Node == st.Node && g.Grantee.Session == st.Session {
				return e.Index, true
			}
		}
		from = page.Entries[len(page.Entries)-1].Index + 1
	}
	return 0, false
}

func (d *Dispatcher) append(ctx context.Context, kind string, body any) (uint64, error) {
	se, err := verify.NewEntry(d.o.Key, verify.Kind(kind), body)
	if err != nil {
		return 0, err
	}
	rc, err := d.o.Ledger.Append(ctx, se)
	if err != nil {
		return 0, err
	}
	return rc.Index, nil
}

// appendRetry appends entries in one batch, so that the ledger commits
// them in one block, and retries the ones not taken while every refusal
// is for an entry they refer to that the ledger has not yet taken (a
// node's session.created is appended by the node as the session is
// created, a commit after it answers) and, if current is not nil, while
// current reports that the entries' other references still hold. It
// returns each entry's index (0 for one not taken) and the refusal that
// stopped it.
func (d *Dispatcher) appendRetry(ctx context.Context, entries []*verify.SignedEntry, current func(context.Context) error) ([]uint64, error) {
	deadline := time.Now().Add(15 * time.Second)
	idx := make([]uint64, len(entries))
	pause := 10 * time.Millisecond
	for try := 0; ; try++ {
		var todo []int
		for i := range entries {
			if idx[i] == 0 {
				todo = append(todo, i)
			}
		}
		batch := make([]*verify.SignedEntry, len(todo))
		for k, i := range todo {
			batch[k] = entries[i]
		}
		res, err := d.o.Ledger.AppendBatch(ctx, batch, true)
		if err != nil {
			// Unknown whether the entries were taken: the caller reads the
			// request back from the ledger and finds out.
			return idx, err
		}
		var refusal error
		retry := true
		for k, r := range res {
			var rej *verify.RejectedError
			switch {
			case r.Err == nil:
				idx[todo[k]] = r.Receipt.Index
			case errors.As(r.Err, &rej) && rej.Code == verify.CodeReplay && rej.SameEntry && rej.HeldBy != nil:
				idx[todo[k]] = *rej.HeldBy // taken by an earlier try whose answer was lost
			default:
				refusal = cmp.Or(refusal, r.Err)
				retry = retry && errors.As(r.Err, &rej) && rej.Code == verify.CodeMissingReference
			}
		}
		if refusal == nil || !retry || time.Now().After(deadline) {
			return idx, refusal
		}
		if current != nil && try%10 == 0 {
			if cerr := current(ctx); cerr != nil {
				return idx, fmt.Errorf("%w (%v)", cerr, refusal)
			}
		}
		sleep(ctx, pause)
		pause = min(2*pause, 80*time.Millisecond)
	}
}

// errStaleOffers says an assignment names a candidate's offer that is no
// longer its latest: the node renewed it after the offers were read.
var errStaleOffers = errors.New("a candidate renewed its offer since the offers were read")

// offersCurrent reports errStaleOffers if a candidate's latest offer on
// the ledger is not the one cands names (the state machine refuses such
// an assignment for good, so retrying it is useless), and then drops the
// cached view so that the next decision reads it afresh.
func (d *Dispatcher) offersCurrent(ctx context.Context, cands []deal.Candidate) error {
	l, err := d.o.Ledger.Offers(ctx)
	if err != nil {
		return nil // unknown: let the append be retried
	}
	latest := make(map[string]uint64, len(l.Offers))
	for _, o := range l.Offers {
		latest[o.Node] = o.Index
	}
	for _, c := range cands {
		if latest[c.Node] != c.Offer {
			d.dropView()
			return errStaleOffers
		}
	}
	return nil
}

// compile is market.Compile, remembered: a request's requirement is
// compiled when it is submitted and again at each decision on it, and
// compiling costs more CPU than judging a hundred offers with it.
func (d *Dispatcher) compile(src string) (*market.Requirement, error) {
	d.mu.Lock()
	r := d.compiled[src]
	d.mu.Unlock()
	if r != nil {
		return r, nil
	}
	r, err := market.Compile(src)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	if len(d.compiled) >= maxCompiled {
		clear(d.compiled)
	}
	d.compiled[src] = r
	d.mu.Unlock()
	return r, nil
}

// maxCompiled bounds the requirements remembered (at most
// market.MaxRequirementLen bytes each); beyond it they are all forgotten.
const maxCompiled = 1024

// errStaleRecords says an assignment names a candidate's count of recent
// failures that is no longer the ledger's: a run of it finished or failed
// after the records were read.
var errStaleRecords = errors.New("a candidate's record changed since the records were read")

// recordsCurrent reports errStaleRecords if a candidate's count of recent
// failures on the ledger is not the one cands names (the state machine
// refuses such an assignment), and then drops the cached view.
func (d *Dispatcher) recordsCurrent(ctx context.Context, cands []deal.Candidate) error {
	recs, err := d.o.Ledger.MarketRecords(ctx)
	if err != nil {
		return nil // unknown: the request is read back and decided again
	}
	failures := make(map[string]int, len(recs.Records))
	for _, r := range recs.Records {
		failures[r.Node] = market.Candidate{Recent: r.Recent}.Failures()
	}
	for _, c := range cands {
		if failures[c.Node] != c.Failures {
			d.dropView()
			return errStaleRecords
		}
	}
	return nil
}

// delegationLimits reads the limits of the delegation a listing grants
// under from the ledger.
func (d *Dispatcher) delegationLimits(ctx context.Context, lst Listing) (acl.Limits, error) {
	d.mu.Lock()
	l, ok := d.limits[lst.Delegation]
	d.mu.Unlock()
	if ok {
		return l, nil // an entry never changes; a revocation is the ledger's to judge
	}
	e, err := d.o.Ledger.Get(ctx, lst.Delegation)
	if err != nil {
		return acl.Limits{}, fmt.Errorf("reading delegation %d: %w", lst.Delegation, err)
	}
	del, err := acl.DecodeDelegation(e.Signed.Entry.Body)
	if err != nil || e.Signed.Entry.Kind != acl.KindDelegated {
		return acl.Limits{}, fmt.Errorf("entry %d is not a delegation", lst.Delegation)
	}
	d.mu.Lock()
	d.limits[lst.Delegation] = del.Limits
	d.mu.Unlock()
	return del.Limits, nil
}

// Rank is the dispatcher's order of candidates for a request: the pure
// market.Rank over the offers' prices and the ledger's records.
func rankInputs(offers []lclient.LiveOffer, records map[string][]bool) []market.Candidate {
	out := make([]market.Candidate, 0, len(offers))
	for _, o := range offers {
		p, err := market.Price(&o.Offer)
		if err != nil {
			continue
		}
		out = append(out, market.Candidate{Node: o.Node, Price: p, Recent: records[o.Node]})
	}
	return out
}

// assign picks the best candidate whose fresh evidence satisfies the
// request, records the assignment and grants the key.
//
// With together, the assignment and the grant are appended in one batch
// (decision 0164): for the first decision on a request this dispatcher
// relayed, which no other dispatcher is likely to be deciding too.
// Otherwise — a failover, a request found open on the ledger, which every
// dispatcher watching the ledger may race for — the grant is appended only
// once the assignment is taken, so a dispatcher that loses the race grants
// nothing.
func (d *Dispatcher) assign(ctx context.Context, req *deal.Request, st *lclient.RequestState, together bool) error {
	t0 := time.Now()
	lst, ok := d.listing(req)
	if !ok {
		return fmt.Errorf("no listing for sealed program %s", req.Sealed)
	}
	reqm, err := d.compile(req.Requirement)
	if err != nil {
		return err
	}
	// The delegation's TCB floor and rate are the ledger's to enforce; the
	// dispatcher judges them first so that no provider is assigned (and
	// failed) a run whose grant the ledger would refuse.
	limits, err := d.delegationLimits(ctx, lst)
	if err != nil {
		return err
	}
	if err := d.rateAllows(ctx, lst.Delegation, limits.Rate, time.Now()); err != nil {
		return fmt.Errorf("delegation %d: %w", lst.Delegation, err)
	}
	// The offers, records and PIEE scores as last read, kept warm while
	// the dispatcher has work (liveView).
	view, err := d.liveView(ctx, false)
	if err != nil {
		return err
	}
	read := time.Since(t0)
	records, faults := view.records, view.faults
	byNode := map[string]lclient.LiveOffer{}
	pool := candidatePool(view.offers.Offers, req, reqm, st.Failed)
	for _, o := range pool {
		byNode[o.Node] = o
	}
	ranked := market.Rank(req.ID, rankInputs(pool, records))
	if len(ranked) > d.o.MaxCandidates {
		ranked = ranked[:d.o.MaxCandidates]
	}
	if len(ranked) == 0 {
		return errors.New("no live offer within the request's price, from a node not yet failed, offers a class that could satisfy the requirement")
	}
	cands := make([]deal.Candidate, len(ranked))
	for i, c := range ranked {
		o := byNode[c.Node]
		cands[i] = deal.Candidate{Node: c.Node, Offer: o.Index, Price: o.Offer.Price, Failures: c.Failures()}
	}
	now := time.Now()
	dl := req.DeadlineTime()
	runDeadline := now.Add(time.Duration(float64(dl.Sub(now)) * d.o.RunShare)).Truncate(time.Second)
	if dl.Sub(now) < 10*time.Second {
		runDeadline = dl
	}
	var skipped []deal.Skipped
	var reasons []string
	for _, c := range pieeOrder(ranked, faults) {
		o := byNode[c.Node]
		pick, err := d.probe(ctx, req, st.Consumer, lst, reqm, o, runDeadline)
		if err == nil {
			if err = limits.CheckTCB(pick.class, pick.svn); err != nil {
				pick.close()
				err = fmt.Errorf("delegation %d: %w", lst.Delegation, err)
			}
		}
		if err != nil {
			skipped = append(skipped, deal.Skipped{Node: c.Node, Reason: trim(err.Error())})
			reasons = append(reasons, fmt.Sprintf("%s: %v", c.Node, err))
			continue
		}
		skipped = append(skipped, pieeSkips(ranked, c.Node, faults, skipped)...)
		a := deal.Assignment{Request: req.ID, Token: st.Token + 1, Node: c.Node, Session: pick.session.ID(),
			PolicyHash: pick.pol.HashHex(), Policy: pick.doc, Class: pick.class, Measurement: pick.measurement,
			ClaimsSHA256: pick.evidence, Candidates: cands, Skipped: skipped, RunDeadline: acl.FormatTime(runDeadline)}
		// The grant: that session only, until the run's deadline, one use,
		// under the innovator's delegation (the ledger judges its limits).
		// It goes in one batch with the assignment, so both are committed
		// in one block and the consumer, told of the assignment, finds the
		// grant there too (decision 0164).
		g := acl.Grant{Artifact: lst.Sealed.Digest, Owner: lst.Sealed.Owner, Grantee: acl.Grantee{Node: c.Node, Session: a.Session},
			NotAfter: acl.FormatTime(runDeadline), MaxUses: 1, Delegation: &lst.Delegation}
		ae, err := verify.NewEntry(d.o.Key, deal.KindAssigned, a)
		var ge *verify.SignedEntry
		if err == nil {
			ge, err = verify.NewEntry(d.o.Key, acl.KindGranted, g)
		}
		if err != nil {
			pick.close()
			return err
		}
		decided := time.Since(t0)
		d.refreshView(ctx)
		current := func(ctx context.Context) error { return d.offersCurrent(ctx, cands) }
		var ai, gi uint64
		if together {
			var idx []uint64
			idx, err = d.appendRetry(ctx, []*verify.SignedEntry{ae, ge}, current)
			ai, gi = idx[0], idx[1]
		} else {
			var idx []uint64
			if idx, err = d.appendRetry(ctx, []*verify.SignedEntry{ae}, current); idx[0] != 0 {
				ai = idx[0]
				idx, err = d.appendRetry(ctx, []*verify.SignedEntry{ge}, nil)
				gi = idx[0]
			}
		}
		if gi != 0 {
			d.noteGrant(lst.Delegation, time.Now())
		}
		if ai == 0 {
			// Not assigned (another dispatcher's assignment came first, or
			// a candidate's offer or record changed): a grant taken with
			// it is for a session nobody will use, and is revoked at once.
			if gi != 0 {
				d.revoke(ctx, req.ID, a.Token, gi)
			}
			pick.close()
			var rej *verify.RejectedError
			if errors.As(err, &rej) && rej.Code == verify.CodeMalformed {
				if cerr := d.recordsCurrent(ctx, cands); cerr != nil {
					err = fmt.Errorf("%w (%v)", cerr, err)
				}
			}
			return fmt.Errorf("recording the assignment: %w", err)
		}
		d.log.Info("assigned", "id", req.ID, "token", a.Token, "node", c.Node, "session", a.Session, "entry", ai, "class", pick.class,
			"decided_ms", ms(decided), "read_ms", ms(read), "session_ms", ms(pick.created), "attest_ms", ms(pick.attested), "committed_ms", ms(time.Since(t0)))
		if gi == 0 {
			d.fail(ctx, lclient.RequestState{ID: req.ID, Token: a.Token, Node: c.Node, Dispatcher: d.pub}, deal.ReasonRefused, trim(fmt.Sprint("the grant was refused: ", err)))
			pick.close()
			return fmt.Errorf("granting the key: %w", err)
		}
		d.mu.Lock()
		d.grants[fmt.Sprint(req.ID, a.Token)] = gi
		delete(d.tickets, req.ID)
		d.mu.Unlock()
		d.notify(req.ID)
		pick.close()
		return nil
	}
	return fmt.Errorf("no candidate's evidence satisfied the requirement: %s", strings.Join(reasons, "; "))
}

// candidatePool is what one assignment ranks: the live offers with an
// https endpoint, of nodes not yet failed for this request, within the
// request's price, that offer a class which could satisfy the requirement
// on the offer's own fields (classMaySatisfy). The ranking is cut to
// MaxCandidates after this filter, not before: otherwise cheap offers
// that can never match would fill every candidate slot and starve a
// request that dearer providers could serve.
func candidatePool(offers []lclient.LiveOffer, req *deal.Request, reqm *market.Requirement, failed []string) []lclient.LiveOffer {
	var pool []lclient.LiveOffer
	for _, o := range offers {
		if o.Endpoint == "" || slices.Contains(failed, o.Node) || !strings.HasPrefix(o.Endpoint, "https://") {
			continue
		}
		if req.MaxPrice != "" && o.Offer.Price != "" && deal.DecimalLess(req.MaxPrice, o.Offer.Price) {
			continue
		}
		if !slices.ContainsFunc(o.Offer.Classes, func(c string) bool { return classMaySatisfy(reqm, &o.Offer, c) }) {
			continue
		}
		pool = append(pool, o)
	}
	return pool
}

// ms is d in milliseconds, for logs.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func trim(s string) string {
	if len(s) > deal.MaxReason {
		return s[:deal.MaxReason]
	}
	return s
}

type probed struct {
	created, attested            time.Duration // the session's creation, its evidence fetched and verified
	session                      *client.AttestedSession
	pol                          *policy.Policy
	doc                          json.RawMessage
	class, measurement, evidence string
	svn                          map[string]uint64
}

func (p *probed) close() { p.session.CloseIdleConnections() }

// nodeClient is the client of node at endpoint, its platform key pk
// pinned: one per node, kept, so that its TLS connection (HTTP/2) serves
// every session opened and every status asked there, instead of a
// handshake each time.
func (d *Dispatcher) nodeClient(node, endpoint string, pk ed25519.PublicKey) (*client.Client, error) {
	key := node + " " + endpoint
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.nodes[key]; c != nil {
		return c, nil
	}
	if len(d.nodes) >= maxNodeClients {
		for k, c := range d.nodes {
			c.Close()
			delete(d.nodes, k)
		}
	}
	c, err := client.Dial(context.Background(), endpoint, client.WithPlatformKeys(pk))
	if err != nil {
		return nil, err
	}
	d.nodes[key] = c
	return c, nil
}

// maxNodeClients bounds the node clients kept; beyond it they are all
// closed and made again as needed.
const maxNodeClients = 1024

// dropNode closes and forgets node's client at endpoint (it failed).
func (d *Dispatcher) dropNode(node, endpoint string) {
	key := node + " " + endpoint
	d.mu.Lock()
	if c := d.nodes[key]; c != nil {
		c.Close()
		delete(d.nodes, key)
	}
	d.mu.Unlock()
}

// probe opens a session on the node for the policy written for it and
// verifies the session's fresh evidence (client.Attest: the node's
// pinned key or the class's roots, the policy hash, a fresh nonce); then
// judges the requirement on the verified claims.
func (d *Dispatcher) probe(ctx context.Context, req *deal.Request, consumer string, lst Listing, reqm *market.Requirement, o lclient.LiveOffer, runDeadline time.Time) (*probed, error) {
	doc, pol, err := writePolicy(req, reqm, consumer, lst, o, runDeadline)
	if err != nil {
		return nil, err
	}
	pk, err := protocol.ParseEd25519Key(o.Node)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	c, err := d.nodeClient(o.Node, o.Endpoint, pk)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	id, err := c.CreateSession(pctx, doc)
	created := time.Since(t0)
	if err != nil {
		d.dropNode(o.Node, o.Endpoint)
		return nil, fmt.Errorf("opening a session: %w", err)
	}
	as, err := c.Attest(pctx, id, pol)
	if err != nil {
		return nil, fmt.Errorf("its evidence: %w", err)
	}
	cl := as.Claims()
	v := market.Verified{Class: string(cl.Class), Measurement: hex.EncodeToString(cl.Measurement), Debug: cl.Debug}
	ok, err := reqm.Satisfied(&o.Offer, v)
	if d.vouchAll {
		ok, err = true, nil
	}
	if err != nil || !ok {
		as.CloseIdleConnections()
		if err == nil {
			err = fmt.Errorf("its verified claims (class %s, debug %v) and offer do not satisfy the requirement", v.Class, v.Debug)
		}
		return nil, err
	}
	cj, _ := json.Marshal(cl)
	sum := sha256.Sum256(cj)
	return &probed{created: created, attested: time.Since(t0) - created, session: as, pol: pol, doc: doc, class: v.Class, measurement: v.Measurement, evidence: hex.EncodeToString(sum[:]), svn: cl.SVN}, nil
}

// WritePolicy writes the policy of one run from the request: the
// consumer is the only principal — it provides every input and is the
// only reader of every output; the program is the innovator's sealed
// program, by reference; the isolate classes are the ones the node
// offers that may satisfy the requirement, its platform key pinned; the policy expires at the run's
// deadline. The consumer checks every one of these (CheckPolicy).
func WritePolicy(req *deal.Request, reqm *market.Requirement, consumer string, lst Listing, o lclient.LiveOffer, runDeadline time.Time) (json.RawMessage, error) {
	doc, _, err := writePolicy(req, reqm, consumer, lst, o, runDeadline)
	return doc, err
}

// writePolicy is WritePolicy, with the policy as parsed from the document
// (parsing, with its canonical form, is most of the cost).
func writePolicy(req *deal.Request, reqm *market.Requirement, consumer string, lst Listing, o lclient.LiveOffer, runDeadline time.Time) (json.RawMessage, *policy.Policy, error) {
	p := policy.Policy{
		Version: policy.Version,
		Name:    "market-" + req.ID[:16],
		Principals: []policy.Principal{{ID: "consumer", SigningKey: consumer, SealingKey: req.SealingKey,
			Roles: []policy.Role{policy.RoleDataProvider, policy.RoleResultReader}}},
		Programs: []policy.Program{{Name: lst.Name, SHA256: lst.SHA256, Sealed: &lst.Sealed}},
		Limits:   lst.Limits,
		Expires:  runDeadline.UTC(),
	}
	for _, in := range req.Inputs {
		p.Inputs = append(p.Inputs, policy.Input{Name: in, Provider: "consumer"})
	}
	for _, out := range lst.Outputs {
		p.Outputs = append(p.Outputs, policy.Output{Name: out, Readers: []string{"consumer"}})
	}
	for _, c := range o.Offer.Classes {
		if !classMaySatisfy(reqm, &o.Offer, c) {
			continue
		}
		iso := policy.Isolate{Class: c}
		if c == "software" {
			iso.PlatformKeys = []string{o.Node}
		} else {
			// Hardware classes chain to their vendors' roots; the
			// measurements the node attests to bound what runs.
			iso.Measurements = o.Offer.Measurements
		}
		p.Isolates = append(p.Isolates, iso)
	}
	if len(p.Isolates) == 0 {
		return nil, nil, fmt.Errorf("none of the classes it offers (%v) can satisfy the requirement", o.Offer.Classes)
	}
	b, err := json.Marshal(&p)
	if err != nil {
		return nil, nil, err
	}
	pol, err := policy.Parse(b)
	if err != nil {
		return nil, nil, fmt.Errorf("the policy written for the request: %w", err)
	}
	return b, pol, nil
}

// readBody reads at most max bytes of r's body, refusing more.
func readBody(r *http.Request, max int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > max {
		return nil, fmt.Errorf("request body: more than %d bytes", max)
	}
	return b, nil
}

// classMaySatisfy reports whether an isolate of class c, with one of the
// measurements the offer names (or none), could satisfy the requirement:
// the classes a policy may admit. The evidence decides in the end.
func classMaySatisfy(reqm *market.Requirement, o *lclient.Offer, c string) bool {
	for _, m := range append([]string{""}, o.Measurements...) {
		if ok, _ := reqm.Satisfied(o, market.Verified{Class: c, Measurement: m}); ok {
			return true
		}
	}
	return false
}
