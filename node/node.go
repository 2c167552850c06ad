package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/software"
	"github.com/cloisterhq/cloister/broker"
	"github.com/cloisterhq/cloister/internal/httpguard"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
)

// PlatformKeyFile is the node's platform key, under its data directory.
const PlatformKeyFile = "platform.key"

// NodeServerName is the SNI of the node's own certificate; any name that is
// not a session's reaches the node too.
const NodeServerName = "node.cloister"

// Options configures a Node.
type Options struct {
	// DataDir holds platform.key, sessions/ and the isolate compilation
	// cache. Required.
	DataDir string
	// IsolateClass is the class this node attests as; empty means
	// software. It must match Attester when both are set.
	IsolateClass attest.Class
	// Attester produces session evidence. Nil means a software attester
	// signing with the platform key (other classes must pass one).
	Attester attest.Attester
	// Runner runs programs. Nil means an isolate runtime (jailed workers)
	// created over DataDir, closed with the node.
	Runner Runner
	// WarmWorkers is passed to the isolate runtime the node creates.
	WarmWorkers int
	// HostCalls adds host calls to the built-in ones (node/hostcalls.go)
	// that policies may allow their programs.
	HostCalls map[string]isolate.HostCall
	// SettleHostCalls, when set, is called after a run whose policy
	// allows host calls exited 0, before its outputs are kept: an error
	// fails the run with it, and no output is released (federation: the
	// receipts of every sub-model call are on the ledger first).
	SettleHostCalls func(ctx context.Context, ri RunInfo) error
	// MaxConcurrentRuns bounds simultaneous runs; 0 means the CPU count.
	MaxConcurrentRuns int
	// Ledger, when set, is where the node registers itself (once: see
	// RegistrationFile) and records its sessions' events, each an entry
	// signed by the platform key. New fails if the registration fails.
	Ledger ledger.Appender
	// LedgerName identifies Ledger (its checkpoint origin, say): a
	// registration remembered for another name is made again.
	LedgerName string
	// LedgerURL is an external Ledger's API URL, shown by the status;
	// empty for an embedded one.
	LedgerURL string
	// LedgerStatus, when set, reports the ledger's height, peers and
	// sync: the node is not ready while it fails or the ledger is
	// catching up (/readyz).
	LedgerStatus func(context.Context) (LedgerState, error)
	// Grants reads the ledger's artifacts and grants, for sessions whose
	// policy names a sealed program (docs/broker.md); nil: this node
	// refuses such policies.
	Grants broker.EntryLister
	// EventLog records session events on something other than a ledger
	// (tests); it may not be set together with Ledger. Nil with no Ledger
	// means events are kept in the session's state only.
	EventLog EventLog
	// Logger receives structured logs; nil means slog.Default().
	Logger *slog.Logger
	// NoSync skips fsync on state writes. Writes stay atomic (a crashed
	// process leaves old or new state), but a power loss may lose the
	// latest step. For benchmarks and throwaway nodes.
	NoSync bool
	// Now is the clock for policy expiry and request freshness; nil means
	// time.Now.
	Now func() time.Time
	// Limits bound requests before the node works on them (zero fields:
	// defaults).
	Limits Limits
	// Admission says who may create sessions and bounds what they hold
	// (zero: open mode, default quotas).
	Admission Admission
	// BlobCache bounds the bytes of stored inputs kept in DataDir/blobs
	// (0: DefaultBlobCache); the least recently used go first, never one
	// a running session holds.
	BlobCache int64
	// Endpoint, with a Ledger, is the URL others reach the node at, named
	// in its node.registered entry; a later start that names another
	// moves the node with a node.endpoint entry (rule version 4).
	Endpoint string
	// Organisation, with a Ledger, is the consortium member key of the
	// organisation that runs the node, named in its node.registered entry:
	// the ledger refuses a key that is not a current member, and it is
	// fixed once the node is registered.
	Organisation ed25519.PublicKey
	// Replicas reads replica sets on the Ledger; without it the node
	// refuses policies with more than one replica.
	Replicas ReplicaReader
	// ReplicaFaults inject faults (tests, demos only).
	ReplicaFaults ReplicaFaults
	// Offer, with a Ledger, is the capacity the node offers on the ledger,
	// published at start and renewed while it runs (offer.go).
	Offer *OfferSpec
}

// Node hosts sessions behind one TLS listener.
type Node struct {
	opts     Options
	log      *slog.Logger
	platform *keys.PrivateKey
	class    attest.Class
	attester attest.Attester
	runner   Runner
	ownsRun  *isolate.Runtime
	// hostCalls are the calls this node offers programs.
	hostCalls map[string]isolate.HostCall
	settle    func(ctx context.Context, ri RunInfo) error
	// mounted are the services served beside the node's API (services.go).
	mounted []mounted
	store   *store
	blobs   *blobCache // stored inputs fetched by digest
	// grants folds the ledger's artifacts and grants for sealed programs
	// (nil without Options.Grants).
	grants   *broker.Grants
	policies policyCache
	events   EventLog
	numbers  *entryNumbers // with a NumberedEventLog
	nodeCert tls.Certificate
	// registered is the ledger index of the node's node.registered entry.
	registered uint64

	runSlots chan struct{}
	// readSlots bounds the ReadResult buffers in flight (stream.go).
	readSlots chan struct{}
	baseCtx   context.Context
	stop      context.CancelFunc
	// recCtx bounds ledger appends: it ends after baseCtx, once Close has
	// given pending entries their chance.
	recCtx    context.Context
	recStop   context.CancelFunc
	wg        sync.WaitGroup
	recActive atomic.Int64 // sessions' ledger recorders running (recordLoop)

	mu       sync.RWMutex
	sessions map[string]*session
	closed   closedSet

	srvMu sync.Mutex
	srv   *http.Server

	limits   Limits // opts.Limits with defaults
	admit    *admitter
	inflight inflight
	conns    httpguard.Stats // of the listener Serve guards
	metrics  *metrics

	started  time.Time
	draining atomic.Bool // Drain called: no new sessions or uploads
	ready    readiness
	errs     errorRing // latest warnings and errors logged
	// What an observer sees (view.go): the refusals the node made,
	// closed sessions' receipt material.
	refusals refusalLog
	receipts *receiptArchive
}

// New opens (or, on first start, initialises) a node over opts.DataDir:
// it loads or creates the platform key, derives the storage key, and
// restores every stored session. Sessions that were running when the node
// stopped are run again from their sealed program and inputs.
func New(ctx context.Context, opts Options) (*Node, error) {
	if opts.DataDir == "" {
		return nil, errors.New("node: no data directory")
	}
	if opts.Ledger != nil && opts.EventLog != nil {
		return nil, errors.New("node: Ledger and EventLog are exclusive")
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: data directory: %w", err)
	}
	n := &Node{opts: opts, log: opts.Logger, events: opts.EventLog,
		sessions: map[string]*session{}, closed: newClosedSet(), limits: opts.Limits.withDefaults()}
	n.inflight.max = n.limits.MaxInflightBytes
	var err error
	if n.admit, err = newAdmitter(n, opts.Admission); err != nil {
		return nil, err
	}
	n.metrics = newMetrics(n)
	if n.log == nil {
		n.log = slog.Default()
	}
	n.log = slog.New(&ringHandler{next: n.log.Handler(), ring: &n.errs})
	n.started = time.Now()
	pk, created, err := keys.LoadOrCreate(filepath.Join(opts.DataDir, PlatformKeyFile))
	if err != nil {
		return nil, fmt.Errorf("node: platform key: %w", err)
	}
	n.platform = pk
	if created {
		n.log.Info("created platform key", "path", filepath.Join(opts.DataDir, PlatformKeyFile), "signing_key", pk.Public().SigningString())
	}
	n.class = opts.IsolateClass
	n.attester = opts.Attester
	switch {
	case n.attester != nil && n.class == "":
		n.class = n.attester.Class()
	case n.attester != nil && n.attester.Class() != n.class:
		return nil, fmt.Errorf("node: isolate class %q but the attester produces %q evidence", n.class, n.attester.Class())
	case n.attester == nil && (n.class == "" || n.class == attest.ClassSoftware):
		n.class = attest.ClassSoftware
		if n.attester, err = software.NewAttester(pk.Signer()); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	case n.attester == nil:
		return nil, fmt.Errorf("node: isolate class %q needs an attester", n.class)
	}
	if opts.Ledger != nil {
		// Registered before any session event: the ledger refuses
		// session entries from unregistered nodes, so every session
		// entry of this node sits at an index above the registration's,
		// hence never at 0 (the node reads index 0 as "not recorded").
		if err := n.register(ctx); err != nil {
			return nil, err
		}
		n.events = &ledgerLog{app: opts.Ledger, key: pk.Signer()}
	}
	if opts.Grants != nil {
		n.grants = broker.NewGrants(opts.Grants, pk.Public().SigningString())
	}
	if _, ok := n.events.(NumberedEventLog); ok {
		if n.numbers, err = openEntryNumbers(opts.DataDir); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	skey, err := deriveStorageKey(pk.Signer().Seed())
	if err != nil {
		return nil, err
	}
	n.settle = opts.SettleHostCalls
	if n.hostCalls, err = hostCalls(opts.HostCalls); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if n.nodeCert, err = nodeCertificate(pk.Signer()); err != nil {
		return nil, err
	}
	if n.store, err = openStore(filepath.Join(opts.DataDir, "sessions"), skey, !opts.NoSync); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if n.blobs, err = newBlobCache(opts.DataDir, opts.BlobCache, !opts.NoSync, n.log); err != nil {
		n.store.close()
		return nil, fmt.Errorf("node: %w", err)
	}
	if n.receipts, err = openReceiptArchive(opts.DataDir, !opts.NoSync, n.log); err != nil {
		n.store.close()
		return nil, fmt.Errorf("node: %w", err)
	}
	n.runner = opts.Runner
	if n.runner == nil {
		// The compilation cache's entries are authenticated under a key
		// of this node's (decision 0073).
		ck, err := hkdf.Key(sha256.New, pk.Signer().Seed(), nil, cacheKeyLbl, 32)
		if err != nil {
			return nil, err
		}
		rt, err := isolate.New(ctx, isolate.Options{DataDir: opts.DataDir, WarmWorkers: opts.WarmWorkers, CacheKey: ck})
		if err != nil {
			n.store.close()
			return nil, fmt.Errorf("node: isolate runtime: %w", err)
		}
		n.runner, n.ownsRun = rt, rt
		if name, note := rt.WorkerBinary(); note != "" {
			n.log.Info("isolate workers", "binary", name, "note", note)
		} else {
			n.log.Info("isolate workers", "binary", name)
		}
	}
	runs := opts.MaxConcurrentRuns
	if runs <= 0 {
		runs = runtime.NumCPU()
	}
	n.runSlots = make(chan struct{}, runs)
	n.readSlots = make(chan struct{}, maxReadsInFlight)
	n.baseCtx, n.stop = context.WithCancel(context.Background())
	n.recCtx, n.recStop = context.WithCancel(context.Background())
	if err := n.restore(); err != nil {
		n.Close()
		return nil, err
	}
	n.store.startSpares()
	n.wg.Add(1)
	go n.sweepLoop()
	if opts.Offer != nil && opts.Ledger != nil {
		if err := n.startOffer(ctx); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

func (n *Node) now() time.Time {
	if n.opts.Now != nil {
		return n.opts.Now()
	}
	return time.Now()
}

// PlatformKey returns the node's platform signing key, the value a policy
// lists under platform_keys for the software class.
func (n *Node) PlatformKey() ed25519.PublicKey { return n.platform.Public().Signing }

// Class returns the isolate class the node attests as.
func (n *Node) Class() attest.Class { return n.class }

// PlatformSigner returns the platform signing key, for a part of this
// node that speaks for it on the ledger (its PIEE agent, package piee).
func (n *Node) PlatformSigner() ed25519.PrivateKey { return n.platform.Signer() }

// Runner returns what runs the node's programs: its isolate runtime.
func (n *Node) Runner() Runner { return n.runner }

// nodeCertificate makes the node's TLS certificate: a fresh P-256 key
// certified by the Ed25519 platform key. A client holding a policy checks
// the signature against the policy's platform keys, so the node is
// authenticated without any CA (docs/decisions/0030-session-protocol.md).
func nodeCertificate(platform ed25519.PrivateKey) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	issuer := &x509.Certificate{Subject: pkix.Name{CommonName: "cloister platform " + keys.FormatSigningKey(platform.Public().(ed25519.PublicKey))[:24]}}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: NodeServerName},
		DNSNames:     []string{NodeServerName, "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), platform)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("node: certifying the TLS key with the platform key: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// TLSConfig returns the server TLS configuration: the session's own
// certificate for "<id>.session.cloister", the node's otherwise.
func (n *Node) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if id := protocol.SessionFromServerName(hello.ServerName); id != "" {
				if s := n.session(id); s != nil {
					return &s.core.cert, nil
				}
			}
			return &n.nodeCert, nil
		},
	}
}

// Serve accepts TLS connections on ln until Shutdown, under the listener
// limits of Options.Limits.HTTP (connections in total and per address,
// handshake, header, body-pace, response and idle timeouts). It refuses to
// serve a node in open admission mode beyond loopback unless
// Admission.AllowOpen (CheckListen). It returns http.ErrServerClosed
// after a clean shutdown.
func (n *Node) Serve(ln net.Listener) error {
	if err := CheckListen(ln.Addr(), n.opts.Admission); err != nil {
		return err
	}
	srv := httpguard.NewServer(n.Handler(), n.limits.HTTP, &n.conns, slog.NewLogLogger(n.log.Handler(), slog.LevelDebug))
	srv.TLSConfig = n.TLSConfig()
	n.srvMu.Lock()
	n.srv = srv
	n.srvMu.Unlock()
	return srv.ServeTLS(httpguard.Listen(ln, n.limits.HTTP, &n.conns), "", "")
}

// Shutdown stops accepting connections and waits for requests in flight
// (long polls included) until ctx ends.
func (n *Node) Shutdown(ctx context.Context) error {
	n.srvMu.Lock()
	srv := n.srv
	n.srvMu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}

// Close stops runs in progress (they are run again at the next start),
// and releases the isolate runtime the node created.
func (n *Node) Close() error {
	// Stopping first ends long polls at once, so that shutdown does not
	// wait for them.
	if n.stop != nil {
		n.stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	n.Shutdown(ctx)
	cancel()
	n.wg.Wait()
	// No step can be taken any more: the ledger entries of those taken get
	// their chance (usually milliseconds, at most recordTimeout), then the
	// rest is cancelled.
	n.awaitRecorders(recordTimeout)
	if n.recStop != nil {
		n.recStop()
	}
	n.WaitLedger(time.Second)
	if n.store != nil {
		n.store.close()
	}
	if n.ownsRun != nil {
		return n.ownsRun.Close()
	}
	return nil
}

// WaitLedger waits, at most d, until the ledger entries of every step
// committed so far are appended (or have failed, which is logged), and
// reports whether they all were. Steps record their entries in the
// background, so a caller that reads the ledger right after a step — a
// test, or an operator's script — waits here first; status does this for
// its own session.
func (n *Node) WaitLedger(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for n.recActive.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

func (n *Node) awaitRecorders(d time.Duration) {
	if !n.WaitLedger(d) {
		n.log.Warn("ledger entries still being recorded at shutdown", "waited", d)
	}
}

func (n *Node) session(id string) *session {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.sessions[id]
}

func (n *Node) forget(id string, ts tombstone) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.sessions, id)
	n.closed.add(ts) // the recorder has its entries
	if n.closed.len() > maxClosedKept+maxClosedKept/8 {
		n.pruneClosedLocked()
	}
}

// maxClosedKept bounds the closed sessions the node remembers (in memory
// and in its log of closed sessions): past it, the oldest closes are
// forgotten, and asking for one of them gets "no session" (the ledger
// still holds its entries; decision 0064). It matches the receipts kept.
const maxClosedKept = maxArchivedReceipts

// pruneClosedLocked forgets the oldest closed sessions past
// maxClosedKept. Callers hold n.mu.
func (n *Node) pruneClosedLocked() {
	if n.closed.len() <= maxClosedKept {
		return
	}
	all := n.closed.all()
	sort.Slice(all, func(i, j int) bool { return all[i].Closed.After(all[j].Closed) })
	for _, ts := range all[maxClosedKept:] {
		n.closed.remove(ts.ID)
	}
}

// compactClosed forgets the closes past maxClosedKept and, when the log of
// closed sessions has grown to twice what is kept, rewrites it with only
// what is remembered (and what is still to be replayed to the ledger).
// force rewrites it whatever its size.
func (n *Node) compactClosed(force bool) {
	n.mu.Lock()
	n.pruneClosedLocked()
	remembered := n.closed.len()
	n.mu.Unlock()
	if !force && n.store.closedLines() <= 2*max(remembered, 1024) {
		return
	}
	kept, dropped, err := n.store.compactClosed(func(id string) bool {
		n.mu.RLock()
		defer n.mu.RUnlock()
		// A session being closed has its line written before it leaves
		// n.sessions for n.closed: its line stays.
		closed := n.closed.has(id)
		_, closing := n.sessions[id]
		return closed || closing
	})
	switch {
	case err != nil:
		n.log.Error("compacting the log of closed sessions", "err", err)
	case dropped > 0:
		n.log.Info("log of closed sessions compacted", "kept", kept, "dropped_lines", dropped)
	}
}

// recordEntry appends a staged entry to the event log. A log that refuses
// or is down does not stop the session (its own state is authoritative for
// its rules): the failure is logged and the index is 0. The error says
// whether the entry is done with (nil, ErrAlreadyRecorded, ErrRefused) or
// is to be recorded again at the next start (anything else). The append is
// bounded by recordTimeout and by the node stopping, not by the request
// that caused it.
func (n *Node) recordEntry(session string, e *stagedEntry) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	if n.recCtx != nil {
		defer context.AfterFunc(n.recCtx, cancel)()
	}
	var idx uint64
	var err error
	if nl, ok := n.events.(NumberedEventLog); ok && e.Number != 0 {
		idx, err = nl.RecordNumbered(ctx, e.Kind, e.Body, e.Number)
	} else {
		var body map[string]any
		if err = json.Unmarshal(e.Body, &body); err == nil {
			idx, err = n.events.Record(ctx, e.Kind, body)
		}
	}
	var event any
	if e.Kind == LedgerKindSessionEvent {
		var b struct {
			Event string `json:"event"`
		}
		json.Unmarshal(e.Body, &b)
		event = b.Event
	}
	switch {
	case err == nil:
	case errors.Is(err, ErrAlreadyRecorded):
		n.log.Info("event already on the ledger", "kind", e.Kind, "event", event, "session", session, "number", e.Number)
	case errors.Is(err, ErrRefused):
		n.log.Warn("event refused by the ledger; dropped", "kind", e.Kind, "event", event, "session", session, "err", err)
	case e.Number != 0:
		n.log.Warn("event not recorded on the ledger; the next start records it again", "kind", e.Kind, "event", event, "session", session, "err", err)
	default:
		n.log.Warn("event not recorded on the ledger", "kind", e.Kind, "event", event, "session", session, "err", err)
	}
	return idx, err
}

// renumber gives e a new number after the log found its number held by
// another entry; mu, if not nil, guards e (a session's staged entry, which
// its saves encode). It reports whether it did.
func (n *Node) renumber(mu *sync.Mutex, e *stagedEntry) bool {
	num, err := n.numbers.take()
	if err != nil {
		n.log.Error("event not recorded on the ledger: no new number", "err", err)
		return false
	}
	n.log.Error("the ledger holds another entry under this entry's number (numbers reused: was an older copy of the data directory restored?); sending it again under a new one", "number", e.Number, "new", num)
	if mu != nil {
		mu.Lock()
		defer mu.Unlock()
	}
	e.Number = num
	return true
}

// entryDone reports whether a recordEntry outcome ends the entry's life:
// recorded, found recorded already, or refused for good.
func entryDone(err error) bool {
	return err == nil || errors.Is(err, ErrAlreadyRecorded) || errors.Is(err, ErrRefused)
}

// stage makes the event-log entry of rec.Events[i] (i < 0: of no event,
// the close's) before the save that commits its step. With a
// NumberedEventLog the entry is numbered and kept in the event, so that it
// is saved with the step and recorded again after a restart until the log
// confirms it. nil: no event log (or the entry could not be made, which is
// logged).
func (n *Node) stage(rec *record, i int, kind string, body map[string]any) *stagedEntry {
	if n.events == nil {
		return nil
	}
	if kind == LedgerKindSessionEvent && i >= 0 {
		body["event"] = rec.Events[i].Kind
	}
	raw, err := json.Marshal(body)
	if err != nil {
		n.log.Error("event entry", "session", rec.ID, "err", err)
		return nil
	}
	e := &stagedEntry{Kind: kind, Body: raw}
	if n.numbers != nil {
		if e.Number, err = n.numbers.take(); err != nil {
			n.log.Error("event not recorded on the ledger", "session", rec.ID, "err", err)
			return nil
		}
		if i >= 0 {
			rec.Events[i].Entry = e
		}
	}
	return e
}

// replayClosed records the entries a closed session left in its tombstone
// (the node stopped before they were confirmed), then notes that they are.
func (n *Node) replayClosed(ts tombstone) {
	defer n.recActive.Add(-1)
	for i := range ts.Entries {
		e := &ts.Entries[i]
		var b struct {
			Session string `json:"session"`
		}
		if (e.Kind != LedgerKindSessionEvent && e.Kind != LedgerKindResultCommitted && e.Kind != LedgerKindReplicaResult) || json.Unmarshal(e.Body, &b) != nil || b.Session != ts.ID {
			// Sealed by this node for this session, so never expected.
			n.log.Error("a closed session's tombstone holds an entry that is not one of its events; not replayed", "session", ts.ID, "kind", e.Kind)
			continue
		}
		_, err := n.recordEntry(ts.ID, e)
		if errors.Is(err, ErrNumberTaken) && n.renumber(nil, e) {
			_, err = n.recordEntry(ts.ID, e)
		}
		if !entryDone(err) {
			return
		}
	}
	if err := n.store.markRecorded(ts.ID); err != nil {
		n.log.Warn("noting a closed session's entries as recorded", "session", ts.ID, "err", err)
	}
}
