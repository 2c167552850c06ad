package broker

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	_ "github.com/cloisterhq/cloister/attest/all" // isolates of any class ask for keys
	"github.com/cloisterhq/cloister/attest/software"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/internal/httpguard"
	"github.com/cloisterhq/cloister/internal/httpmetrics"
	"github.com/cloisterhq/cloister/internal/probe"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/seal"
)

// Limits of one broker.
const (
	// MaxRequestBytes bounds a request body (evidence with its
	// collateral is the largest part).
	MaxRequestBytes = 256 << 10
	// MaxKeys bounds the shares one broker holds; MaxKeysPerOwner those
	// of one owner.
	MaxKeys         = 100_000
	MaxKeysPerOwner = 10_000
	// MaxNonces bounds the nonces outstanding at once; NonceTTL is how
	// long one stays usable.
	MaxNonces = 4096
	NonceTTL  = time.Minute
	// MaxEvidenceAge bounds how old a release's evidence may be.
	MaxEvidenceAge = 2 * time.Minute
	// MaxRegistrationSkew bounds how far a registration's time may be
	// from the broker's clock.
	MaxRegistrationSkew = 5 * time.Minute
	// KeyFile is the broker's key under its data directory.
	KeyFile = "broker.key"
	keysDir = "keys"
)

// Ledger is what a broker needs of the ledger: grants read by index,
// releases appended and waited for until committed (*client.Client).
type Ledger interface {
	Get(ctx context.Context, index uint64) (*client.Entry, error)
	Append(ctx context.Context, e *verify.SignedEntry) (verify.Receipt, error)
}

// Options configure a Broker.
type Options struct {
	// Dir holds the broker's key and the shares registered with it.
	Dir string
	// Ledger is where releases are recorded and grants read; required
	// for releases.
	Ledger Ledger
	// Attester produces the broker's own evidence; default: software
	// evidence signed by the broker's signing key.
	Attester attest.Attester
	Logger   *slog.Logger
	// Now is the broker's clock (nonces, registration times); default
	// time.Now. Grants are judged by the ledger's block time, not by it.
	Now func() time.Time
}

// Broker holds key shares and releases them to attested isolates under
// grants the ledger judges.
type Broker struct {
	opts Options
	key  *keys.PrivateKey
	att  attest.Attester
	log  *slog.Logger

	mu      sync.Mutex
	nonces  map[string]time.Time
	nkeys   int
	byOwner map[string]int

	conns   httpguard.Stats // of the listener serving Handler (ConnStats)
	metrics *httpmetrics.Metrics
}

// New opens (creating on first use) the broker in opts.Dir.
func New(opts Options) (*Broker, error) {
	if opts.Dir == "" {
		return nil, errors.New("broker: a data directory is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Join(opts.Dir, keysDir), 0o700); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	k, _, err := keys.LoadOrCreate(filepath.Join(opts.Dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	b := &Broker{opts: opts, key: k, att: opts.Attester, log: opts.Logger, nonces: map[string]time.Time{}, byOwner: map[string]int{}}
	if b.att == nil {
		if b.att, err = software.NewAttester(k.Signer()); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
	}
	ents, err := os.ReadDir(filepath.Join(opts.Dir, keysDir))
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	for _, e := range ents {
		raw, err := os.ReadFile(filepath.Join(opts.Dir, keysDir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		var reg Registration
		if err := json.Unmarshal(raw, &reg); err != nil {
			return nil, fmt.Errorf("broker: stored share %s: %w", e.Name(), err)
		}
		b.nkeys++
		b.byOwner[reg.Owner]++
	}
	b.metrics = httpmetrics.New(&b.conns)
	count := func(f func() int) func() float64 {
		return func() float64 {
			b.mu.Lock()
			defer b.mu.Unlock()
			return float64(f())
		}
	}
	b.metrics.Gauge("cloister_broker_keys", "Key shares held.", count(func() int { return b.nkeys }))
	b.metrics.Gauge("cloister_broker_nonces", "Release nonces issued and not yet used or expired.", count(func() int { return len(b.nonces) }))
	return b, nil
}

// ConnStats are the counters to give the listener serving Handler
// (httpguard.Listen, NewServer): /metrics exports them.
func (b *Broker) ConnStats() *httpguard.Stats { return &b.conns }

// SigningKey is the key the broker's ledger entries are signed with.
func (b *Broker) SigningKey() ed25519.PublicKey { return b.key.Public().Signing }

// SealingKey is the text form of the key owners seal shares to.
func (b *Broker) SealingKey() string { return b.key.Public().SealingString() }

// Handler serves the broker's API:
//
//	GET  /v1/info?nonce=HEX   Info: keys and evidence over the nonce
//	POST /v1/keys             Registration → 204
//	POST /v1/nonce            {"nonce": bytes} for a release
//	POST /v1/release          ReleaseRequest → ReleaseResponse
//	GET  /healthz, /readyz    probes (package probe; readiness: health.go)
//	GET  /metrics             Prometheus metrics (package httpmetrics)
//
// Refusals are {"error": reason, "code": code} with 400 (malformed), 403
// (refused: evidence, grant, ledger), 404 (no such key), 429 (a limit),
// 503 (the ledger is unavailable).
func (b *Broker) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/info", b.handleInfo)
	mux.HandleFunc("POST /v1/keys", b.handleRegister)
	mux.HandleFunc("POST /v1/nonce", b.handleNonce)
	mux.HandleFunc("POST /v1/release", b.handleRelease)
	mux.HandleFunc("GET /healthz", probe.Healthz)
	mux.HandleFunc("GET /readyz", (&probe.Ready{Check: b.ready}).Readyz)
	return b.metrics.Serve(mux)
}

// Error is a refusal with its HTTP status.
type Error struct {
	Status int    `json:"-"`
	Code   string `json:"code"`
	Reason string `json:"error"`
}

func (e *Error) Error() string { return e.Reason }

func refused(status int, code, format string, a ...any) *Error {
	return &Error{Status: status, Code: code, Reason: fmt.Sprintf(format, a...)}
}

// Refusal codes.
const (
	CodeMalformed   = "malformed"
	CodeEvidence    = "evidence"
	CodeNonce       = "nonce"
	CodeGrant       = "grant"
	CodeLedger      = "ledger"
	CodeNoKey       = "no_key"
	CodeLimit       = "limit"
	CodeUnavailable = "unavailable"
	CodeSignature   = "signature"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = refused(http.StatusInternalServerError, "internal", "%v", err)
	}
	writeJSON(w, e.Status, e)
}

func readJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxRequestBytes+1))
	if err != nil {
		return refused(http.StatusBadRequest, CodeMalformed, "reading the request: %v", err)
	}
	if len(body) > MaxRequestBytes {
		return refused(http.StatusRequestEntityTooLarge, CodeLimit, "request body over %d bytes", MaxRequestBytes)
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return refused(http.StatusBadRequest, CodeMalformed, "request: %v", err)
	}
	return nil
}

func (b *Broker) handleInfo(w http.ResponseWriter, r *http.Request) {
	nonce, err := hex.DecodeString(r.URL.Query().Get("nonce"))
	if err != nil || len(nonce) != NonceSize {
		writeErr(w, refused(http.StatusBadRequest, CodeMalformed, "nonce: want %d bytes in hex", NonceSize))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	ev, err := b.att.Attest(ctx, InfoReportData(b.SigningKey(), b.SealingKey(), nonce))
	if err != nil {
		writeErr(w, refused(http.StatusServiceUnavailable, CodeUnavailable, "broker evidence: %v", err))
		return
	}
	writeJSON(w, http.StatusOK, Info{SigningKey: protocol.FormatEd25519Key(b.SigningKey()), SealingKey: b.SealingKey(), Evidence: ev})
}

func (b *Broker) keyPath(owner, artifact string) string {
	h := sha256.Sum256([]byte(owner + "\x00" + artifact))
	return filepath.Join(b.opts.Dir, keysDir, hex.EncodeToString(h[:])+".json")
}

func (b *Broker) handleRegister(w http.ResponseWriter, r *http.Request) {
	var reg Registration
	if err := readJSON(r, &reg); err != nil {
		writeErr(w, err)
		return
	}
	if err := b.register(&reg); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// register checks a registration (the owner's signature first, then the
// share: it must open with the broker's key) and stores it as received:
// the share stays sealed to the broker's key at rest.
func (b *Broker) register(reg *Registration) error {
	owner, err := protocol.ParseEd25519Key(reg.Owner)
	if err != nil {
		return refused(http.StatusBadRequest, CodeMalformed, "owner: %v", err)
	}
	if !ed25519.Verify(owner, RegistrationMessage(reg, b.SigningKey()), reg.Signature) {
		return refused(http.StatusForbidden, CodeSignature, "the registration is not signed by owner %s for this broker", reg.Owner)
	}
	t, err := time.Parse(time.RFC3339, reg.Time)
	if err != nil || t.Sub(b.opts.Now()).Abs() > MaxRegistrationSkew {
		return refused(http.StatusForbidden, CodeSignature, "registration time %q is not within %s of the broker's clock", reg.Time, MaxRegistrationSkew)
	}
	if !strings.HasPrefix(reg.Artifact, "sha256:") || len(reg.Artifact) != 71 {
		return refused(http.StatusBadRequest, CodeMalformed, "artifact: want sha256:<64 hex>")
	}
	if reg.Share < 1 || reg.Share > acl.MaxBrokers || reg.Threshold < 1 || reg.Threshold > acl.MaxBrokers {
		return refused(http.StatusBadRequest, CodeMalformed, "share %d of threshold %d: want 1 to %d", reg.Share, reg.Threshold, acl.MaxBrokers)
	}
	v, err := b.key.Open(reg.Envelope, shareInfo(ShareToBroker, reg.Owner, reg.Artifact, "", reg.Share), nil)
	if err != nil || len(v) != ShareSize {
		return refused(http.StatusBadRequest, CodeMalformed, "the share does not open with this broker's key")
	}
	clear(v)
	path := b.keyPath(reg.Owner, reg.Artifact)
	raw, _ := json.Marshal(reg)
	b.mu.Lock()
	defer b.mu.Unlock()
	_, statErr := os.Stat(path)
	if statErr != nil && b.nkeys >= MaxKeys {
		return refused(http.StatusTooManyRequests, CodeLimit, "the broker holds %d keys, its limit", MaxKeys)
	}
	if statErr != nil && b.byOwner[reg.Owner] >= MaxKeysPerOwner {
		return refused(http.StatusTooManyRequests, CodeLimit, "owner %s has %d keys registered here, the limit per owner", reg.Owner, MaxKeysPerOwner)
	}
	if err := atomicfile.WriteFile(path, raw, 0o600); err != nil {
		return fmt.Errorf("broker: storing the share: %w", err)
	}
	if statErr != nil {
		b.nkeys++
		b.byOwner[reg.Owner]++
	}
	b.log.Info("key share registered", "owner", reg.Owner, "artifact", reg.Artifact, "share", reg.Share)
	return nil
}

func (b *Broker) handleNonce(w http.ResponseWriter, r *http.Request) {
	n := make([]byte, NonceSize)
	rand.Read(n)
	now := b.opts.Now()
	b.mu.Lock()
	for k, exp := range b.nonces {
		if now.After(exp) {
			delete(b.nonces, k)
		}
	}
	if len(b.nonces) >= MaxNonces {
		b.mu.Unlock()
		writeErr(w, refused(http.StatusTooManyRequests, CodeLimit, "%d nonces outstanding, the broker's limit; retry shortly", MaxNonces))
		return
	}
	b.nonces[string(n)] = now.Add(NonceTTL)
	b.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string][]byte{"nonce": n})
}

// takeNonce consumes a nonce this broker issued less than NonceTTL ago.
func (b *Broker) takeNonce(n []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	exp, ok := b.nonces[string(n)]
	delete(b.nonces, string(n))
	if !ok || b.opts.Now().After(exp) {
		return refused(http.StatusForbidden, CodeNonce, "the nonce is not one this broker issued in the last %s, or it was used already (ask POST /v1/nonce for a fresh one)", NonceTTL)
	}
	return nil
}

func (b *Broker) handleRelease(w http.ResponseWriter, r *http.Request) {
	var req ReleaseRequest
	if err := readJSON(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 45*time.Second)
	defer cancel()
	resp, err := b.Release(ctx, &req)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// Release judges a release request and, if the evidence and the grant
// allow it, records key.released on the ledger and — only once that entry
// is committed — returns the share sealed to the session's key.
func (b *Broker) Release(ctx context.Context, req *ReleaseRequest) (*ReleaseResponse, error) {
	if err := b.takeNonce(req.Nonce); err != nil {
		return nil, err
	}
	if b.opts.Ledger == nil {
		return nil, refused(http.StatusServiceUnavailable, CodeUnavailable, "this broker has no ledger to record releases on (--ledger)")
	}
	node, err := protocol.ParseEd25519Key(req.Node)
	if err != nil {
		return nil, refused(http.StatusBadRequest, CodeMalformed, "node: %v", err)
	}
	sessKey, err := keys.ParseSealingKey(req.SessionKey)
	if err != nil {
		return nil, refused(http.StatusBadRequest, CodeMalformed, "session_key: %v", err)
	}
	raw, err := os.ReadFile(b.keyPath(req.Owner, req.Artifact))
	if err != nil {
		return nil, refused(http.StatusNotFound, CodeNoKey, "no key share of %s's artifact %s is registered here", req.Owner, req.Artifact)
	}
	var reg Registration
	if err := json.Unmarshal(raw, &reg); err != nil {
		return nil, fmt.Errorf("broker: stored share: %w", err)
	}
	// The grant, as the ledger holds it: the broker checks it names this
	// artifact and isolate; the state machine checks window, revocation
	// and uses when it judges the release entry.
	ge, err := b.opts.Ledger.Get(ctx, req.Grant)
	if err != nil {
		return nil, refused(http.StatusServiceUnavailable, CodeLedger, "reading grant %d from the ledger: %v", req.Grant, err)
	}
	if ge.Signed.Entry.Kind != acl.KindGranted {
		return nil, refused(http.StatusForbidden, CodeGrant, "entry %d is a %s entry, not a grant", req.Grant, ge.Signed.Entry.Kind)
	}
	g, err := acl.DecodeGrant(ge.Signed.Entry.Body)
	if err != nil {
		return nil, refused(http.StatusForbidden, CodeGrant, "entry %d: %v", req.Grant, err)
	}
	if g.Artifact != req.Artifact || g.Owner != req.Owner {
		return nil, refused(http.StatusForbidden, CodeGrant, "grant %d is for artifact %s of %s", req.Grant, g.Artifact, g.Owner)
	}
	// A grant a delegate made carries its delegation's limits; the TCB
	// floor is judged here on the release evidence (and again by the
	// state machine on the versions the release entry reports).
	var limits acl.Limits
	if g.Delegation != nil {
		de, err := b.opts.Ledger.Get(ctx, *g.Delegation)
		if err != nil {
			return nil, refused(http.StatusServiceUnavailable, CodeLedger, "reading delegation %d from the ledger: %v", *g.Delegation, err)
		}
		d, err := acl.DecodeDelegation(de.Signed.Entry.Body)
		if err != nil || de.Signed.Entry.Kind != acl.KindDelegated {
			return nil, refused(http.StatusForbidden, CodeGrant, "grant %d names entry %d, not a delegation", req.Grant, *g.Delegation)
		}
		limits = d.Limits
	}
	// The evidence: signed (for software isolates, by the node's
	// platform key), not debug, within the delegation's TCB floor, fresh
	// and binding this request.
	if req.Evidence == nil {
		return nil, refused(http.StatusForbidden, CodeEvidence, "no evidence")
	}
	now := b.opts.Now()
	claims, err := attest.Verify(ctx, req.Evidence, attest.VerifyOptions{Now: now, TrustedKeys: []crypto.PublicKey{node}})
	if err != nil {
		return nil, refused(http.StatusForbidden, CodeEvidence, "evidence: %v", err)
	}
	if err := limits.CheckTCB(string(claims.Class), claims.SVN); err != nil {
		return nil, refused(http.StatusForbidden, CodeEvidence, "evidence: grant %d was made under delegation %d: %v", req.Grant, *g.Delegation, err)
	}
	rd := ReleaseReportData(req)
	if err := attest.Validate(claims, attest.ReferenceValues{ReportData: rd[:], MaxAge: MaxEvidenceAge}, now); err != nil {
		return nil, refused(http.StatusForbidden, CodeEvidence, "evidence: %v", err)
	}
	var svn map[string]uint64
	for comp := range limits.MinTCB[string(claims.Class)] {
		if svn == nil {
			svn = map[string]uint64{}
		}
		svn[comp] = claims.SVN[comp]
	}
	measurement := hex.EncodeToString(claims.Measurement)
	if err := g.Grantee.Matches(req.Node, req.Session, string(claims.Class), measurement); err != nil {
		return nil, refused(http.StatusForbidden, CodeGrant, "grant %d: %v", req.Grant, err)
	}
	evj, _ := json.Marshal(req.Evidence)
	evSum := sha256.Sum256(evj)
	se, err := verify.NewEntry(b.key.Signer(), acl.KindKeyReleased, acl.Release{
		Artifact: req.Artifact, Owner: req.Owner, Grant: req.Grant, Node: req.Node, Session: req.Session, PolicyHash: req.PolicyHash,
		Class: string(claims.Class), Measurement: measurement, EvidenceSHA256: hex.EncodeToString(evSum[:]), Share: reg.Share, SVN: svn,
	})
	if err != nil {
		return nil, refused(http.StatusBadRequest, CodeMalformed, "release entry: %v", err)
	}
	rc, err := b.opts.Ledger.Append(ctx, se)
	var rej *verify.RejectedError
	switch {
	case errors.As(err, &rej):
		return nil, refused(http.StatusForbidden, CodeLedger, "the ledger refused the release: %s", rej.Reason)
	case err != nil:
		return nil, refused(http.StatusServiceUnavailable, CodeUnavailable, "recording the release: %v", err)
	}
	// Committed: now, and only now, the share leaves.
	v, err := b.key.Open(reg.Envelope, shareInfo(ShareToBroker, reg.Owner, reg.Artifact, "", reg.Share), nil)
	if err != nil {
		return nil, fmt.Errorf("broker: the stored share does not open: %w", err)
	}
	defer clear(v)
	env, err := seal.Seal(sessKey, v, shareInfo(ShareToSession, req.Owner, req.Artifact, req.Session, reg.Share), rd[:])
	if err != nil {
		return nil, err
	}
	b.log.Info("key share released", "artifact", req.Artifact, "grant", req.Grant, "node", req.Node, "session", req.Session, "entry", rc.Index)
	return &ReleaseResponse{Share: reg.Share, Threshold: reg.Threshold, Envelope: env, Entry: rc.Index, Height: rc.Height}, nil
}
