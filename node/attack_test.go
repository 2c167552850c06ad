package node_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/cloister/v1/cloisterv1connect"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/seal"
)

// wantRefusal checks that err is a node refusal with the given code whose
// message names the rule and the principal.
func wantRefusal(t *testing.T, err error, code connect.Code, rule, principal string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want refusal by rule %q", rule)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("code %v, want %v: %v", got, code, err)
	}
	if !strings.Contains(err.Error(), `rule "`+rule+`"`) {
		t.Fatalf("error does not name rule %q: %v", rule, err)
	}
	if principal != "" && !strings.Contains(err.Error(), `"`+principal+`"`) {
		t.Fatalf("error does not name principal %q: %v", principal, err)
	}
}

// rawSession is a hostile or home-made client: it talks to a session over
// its TLS name without attesting, and signs whatever it is told to.
type rawSession struct {
	id   string
	hash [32]byte
	svc  cloisterv1connect.SessionServiceClient
	hc   *http.Client
}

func newRawSession(t *testing.T, tn *testNode, id string, hash [32]byte) *rawSession {
	t.Helper()
	r := rawSessionAt(tn.url, id, hash)
	t.Cleanup(r.close)
	return r
}

// rawSessionAt is a raw session client of the node at url (close it).
func rawSessionAt(url, id string, hash [32]byte) *rawSession {
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{ServerName: protocol.ServerName(id), InsecureSkipVerify: true, NextProtos: []string{"h2"}},
		ForceAttemptHTTP2: true,
	}}
	return &rawSession{id: id, hash: hash, svc: cloisterv1connect.NewSessionServiceClient(hc, url), hc: hc}
}

func (r *rawSession) close() { r.hc.CloseIdleConnections() }

func (r *rawSession) sign(t *testing.T, k *keys.PrivateKey, principal, op, name string, payload []byte) *cloisterv1.SignedRequest {
	t.Helper()
	return r.signWith(k, principal, op, name, payload)
}

// signWith signs a request to the session as principal with key k.
func (r *rawSession) signWith(k *keys.PrivateKey, principal, op, name string, payload []byte) *cloisterv1.SignedRequest {
	nonce := make([]byte, 16)
	rand.Read(nonce)
	var ph [32]byte
	if payload != nil {
		ph = sha256.Sum256(payload)
	}
	ms := time.Now().UnixMilli()
	return &cloisterv1.SignedRequest{Principal: principal, UnixMs: ms, Nonce: nonce,
		Signature: k.Sign(protocol.RequestMessage(r.id, op, name, ph, r.hash, ms, nonce))}
}

func TestAttackDataProviderUploadsProgram(t *testing.T) {
	s := newScenario(t)
	_, _, as, _ := setup(t, s)
	_, err := as.UploadProgram(context.Background(), s.bob.key, "psi-sum.wasm", s.prog.Wasm)
	wantRefusal(t, err, connect.CodePermissionDenied, "listed-provider-only", "bob")
	// The slot is still free for alice.
	if _, err := as.UploadProgram(context.Background(), s.alice.key, "psi-sum.wasm", s.prog.Wasm); err != nil {
		t.Fatalf("the listed provider was refused after the attack: %v", err)
	}
}

func TestAttackWrongProgramHash(t *testing.T) {
	s := newScenario(t)
	_, c, as, _ := setup(t, s)
	evil := append(bytes.Clone(s.prog.Wasm), 0) // one byte more: another module
	_, err := as.UploadProgram(context.Background(), s.alice.key, "psi-sum.wasm", evil)
	wantRefusal(t, err, connect.CodePermissionDenied, "program-hash", "alice")
	st, err := c.Status(context.Background(), as.ID(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Programs[0].Present {
		t.Fatal("a program with the wrong hash was stored")
	}
}

func TestAttackSecondUploadOfInput(t *testing.T) {
	s := newScenario(t)
	tn, _, as, _ := setup(t, s)
	ctx := context.Background()
	if _, err := as.UploadInput(ctx, s.bob.key, "customers.csv", []byte("id\nx\n")); err != nil {
		t.Fatal(err)
	}
	_, err := as.UploadInput(ctx, s.bob.key, "customers.csv", s.input(t, "customers.csv"))
	wantRefusal(t, err, connect.CodeAlreadyExists, "write-once", "bob")
	if m := scrapeMetrics(t, tn); !strings.Contains(m, `cloister_refusals_total{rule="write-once"} 1`+"\n") {
		t.Fatalf("metrics do not count the refusal:\n%s", m)
	}
	// Another provider cannot take the slot either.
	_, err = as.UploadInput(ctx, s.carol.key, "customers.csv", s.input(t, "customers.csv"))
	wantRefusal(t, err, connect.CodePermissionDenied, "listed-provider-only", "carol")
}

func TestAttackReaderNotInPolicy(t *testing.T) {
	s := newScenario(t)
	tn := startNode(t, filepath.Join(t.TempDir(), "node"), nil)
	wasm := readTestdata(t, "sum.wasm")
	doc := s.sumPolicy(t, tn.platformKey(), "sum.wasm", wasm)
	c := dial(t, tn)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	as := createAttested(ctx, t, c, doc)
	s.provisionSum(t, as, "sum.wasm", wasm)
	if _, err := as.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// The SDK refuses to sign for a key the policy does not list.
	mallory := newParty(t, "mallory")
	if _, err := as.Result(ctx, mallory.key, "sum"); !errors.Is(err, client.ErrNotPrincipal) {
		t.Fatalf("SDK with a stranger's key: %v, want ErrNotPrincipal", err)
	}
	raw := newRawSession(t, tn, as.ID(), as.PolicyHash())
	// A stranger naming herself.
	_, err := raw.svc.GetResult(ctx, connect.NewRequest(&cloisterv1.GetResultRequest{SessionId: as.ID(), Output: "sum",
		Auth: raw.sign(t, mallory.key, "mallory", protocol.OpGetResult, "sum", nil)}))
	wantRefusal(t, err, connect.CodePermissionDenied, "signed-by-principal", "mallory")
	// A stranger claiming to be dave.
	_, err = raw.svc.GetResult(ctx, connect.NewRequest(&cloisterv1.GetResultRequest{SessionId: as.ID(), Output: "sum",
		Auth: raw.sign(t, mallory.key, "dave", protocol.OpGetResult, "sum", nil)}))
	wantRefusal(t, err, connect.CodeUnauthenticated, "signed-by-principal", "dave")
	// A principal who is not a reader.
	_, err = as.Result(ctx, s.bob.key, "sum")
	wantRefusal(t, err, connect.CodePermissionDenied, "readers-only", "bob")
	// dave's own request, replayed.
	req := &cloisterv1.GetResultRequest{SessionId: as.ID(), Output: "sum", Auth: raw.sign(t, s.dave.key, "dave", protocol.OpGetResult, "sum", nil)}
	if _, err := raw.svc.GetResult(ctx, connect.NewRequest(req)); err != nil {
		t.Fatal(err)
	}
	_, err = raw.svc.GetResult(ctx, connect.NewRequest(req))
	wantRefusal(t, err, connect.CodePermissionDenied, "fresh-request", "dave")
}

// recorder notes which RPCs reached the node.
type recorder struct {
	mu    sync.Mutex
	paths []string
}

func (r *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.paths = append(r.paths, req.URL.Path)
		r.mu.Unlock()
		h.ServeHTTP(w, req)
	})
}

func TestAttackPolicyDiffersByOneField(t *testing.T) {
	s := newScenario(t)
	rec := &recorder{}
	tn, doc, c := s.nodeWithPolicy(t, rec.wrap)
	ctx := context.Background()
	id, err := c.CreateSession(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	// dave's copy says the output may be 2 MiB instead of 1 MiB.
	mine := mustParse(t, s.policyDoc(t, tn.platformKey(), func(m map[string]any) {
		m["limits"].(map[string]any)["max_output"] = "2MiB"
	}))
	rec.mu.Lock()
	rec.paths = nil
	rec.mu.Unlock()
	as, err := c.Attest(ctx, id, mine)
	if !errors.Is(err, client.ErrPolicyMismatch) || as != nil {
		t.Fatalf("attest with a different policy: %v, want ErrPolicyMismatch", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.paths) != 1 || rec.paths[0] != cloisterv1connect.SessionServiceAttestProcedure {
		t.Fatalf("the client sent %v; only the attestation request may reach the node", rec.paths)
	}
}

// replayer is a hostile node operator who answers every attestation with
// the first one it saw.
type replayer struct {
	mu    sync.Mutex
	saved []byte
	hdr   http.Header
	n     atomic.Int32
}

func (r *replayer) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != cloisterv1connect.SessionServiceAttestProcedure {
			h.ServeHTTP(w, req)
			return
		}
		r.mu.Lock()
		saved := r.saved
		r.mu.Unlock()
		if saved != nil {
			r.n.Add(1)
			for k, v := range r.hdr {
				w.Header()[k] = v
			}
			w.WriteHeader(http.StatusOK)
			w.Write(saved)
			return
		}
		rw := httptest.NewRecorder()
		h.ServeHTTP(rw, req)
		r.mu.Lock()
		r.saved, r.hdr = rw.Body.Bytes(), rw.Header().Clone()
		r.mu.Unlock()
		for k, v := range rw.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rw.Code)
		w.Write(rw.Body.Bytes())
	})
}

func TestAttackReplayedAttestation(t *testing.T) {
	s := newScenario(t)
	rp := &replayer{}
	_, doc, c := s.nodeWithPolicy(t, rp.wrap)
	pol := mustParse(t, doc)
	ctx := context.Background()
	id, err := c.CreateSession(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	first, err := c.Attest(ctx, id, pol)
	if err != nil {
		t.Fatalf("first, honest attestation: %v", err)
	}
	first.CloseIdleConnections()
	_, err = c.Attest(ctx, id, pol)
	if rp.n.Load() != 1 {
		t.Fatalf("replayer served %d replays, want 1", rp.n.Load())
	}
	if !errors.Is(err, client.ErrAttestation) || !errors.Is(err, attest.ErrReportData) {
		t.Fatalf("replayed evidence: %v, want ErrAttestation wrapping attest.ErrReportData", err)
	}
}

// swapper is a hostile node operator who answers attestations of session
// victim with the evidence (and HPKE key) of session donor, whose keys it
// controls, relabelled as victim's.
type swapper struct {
	victim, donor string
}

func (sw *swapper) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != cloisterv1connect.SessionServiceAttestProcedure || req.TLS == nil || req.TLS.ServerName != protocol.ServerName(sw.victim) {
			h.ServeHTTP(w, req)
			return
		}
		body, _ := io.ReadAll(req.Body)
		var ar cloisterv1.AttestRequest
		if err := proto.Unmarshal(body, &ar); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ar.SessionId = sw.donor
		body, _ = proto.Marshal(&ar)
		r2 := req.Clone(req.Context())
		tlsState := *req.TLS
		tlsState.ServerName = protocol.ServerName(sw.donor)
		r2.TLS = &tlsState
		r2.Body = io.NopCloser(bytes.NewReader(body))
		r2.ContentLength = int64(len(body))
		rw := httptest.NewRecorder()
		h.ServeHTTP(rw, r2)
		respBody := rw.Body.Bytes()
		if rw.Header().Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(respBody))
			if err != nil {
				http.Error(w, "swapper: "+err.Error(), http.StatusBadGateway)
				return
			}
			respBody, _ = io.ReadAll(zr)
			rw.Header().Del("Content-Encoding")
		}
		var resp cloisterv1.AttestResponse
		if err := proto.Unmarshal(respBody, &resp); err != nil {
			http.Error(w, "swapper: "+err.Error(), http.StatusBadGateway)
			return
		}
		resp.SessionId = sw.victim
		out, _ := proto.Marshal(&resp)
		for k, v := range rw.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rw.Code)
		w.Write(out)
	})
}

func TestAttackEvidenceFromAnotherSession(t *testing.T) {
	s := newScenario(t)
	sw := &swapper{}
	_, doc, c := s.nodeWithPolicy(t, sw.wrap)
	pol := mustParse(t, doc)
	ctx := context.Background()
	donor, err := c.CreateSession(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	victim, err := c.CreateSession(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	// Control: without the swap the victim session attests.
	ok, err := c.Attest(ctx, victim, pol)
	if err != nil {
		t.Fatal(err)
	}
	ok.CloseIdleConnections()
	sw.victim, sw.donor = victim, donor
	_, err = c.Attest(ctx, victim, pol)
	if !errors.Is(err, client.ErrAttestation) || !errors.Is(err, attest.ErrReportData) {
		t.Fatalf("evidence of session %s presented for %s: %v, want ErrAttestation wrapping attest.ErrReportData", donor, victim, err)
	}
}

func TestAttackTamperedSealedInput(t *testing.T) {
	s := newScenario(t)
	tn, _, as, doc := setup(t, s)
	ctx := context.Background()
	// Seal customers.csv properly, then flip one ciphertext byte. The
	// request is signed over the tampered bytes, so only the seal can
	// catch it.
	resp, err := newRawSessionAttest(t, tn, as.ID())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := seal.ParsePublicKey(resp.HpkePublicKey)
	if err != nil {
		t.Fatal(err)
	}
	hash := mustParse(t, doc).Hash()
	env, err := seal.Seal(pub, s.input(t, "customers.csv"), protocol.SealInfo(protocol.KindInput, as.ID(), "customers.csv", ""), protocol.SealAAD(hash))
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(env)
	tampered[len(tampered)-20] ^= 1
	_, err = as.SendEnvelope(ctx, s.bob.key, false, "customers.csv", tampered)
	wantRefusal(t, err, connect.CodeInvalidArgument, "sealed-to-session", "bob")
	// An intact envelope made for another input name is refused too.
	_, err = as.SendEnvelope(ctx, s.carol.key, false, "purchases.csv", env)
	wantRefusal(t, err, connect.CodeInvalidArgument, "sealed-to-session", "carol")
	// The intact one is accepted.
	if _, err := as.SendEnvelope(ctx, s.bob.key, false, "customers.csv", env); err != nil {
		t.Fatal(err)
	}
}

// newRawSessionAttest fetches an attestation response without verifying
// it (for tests that need the session HPKE key only).
func newRawSessionAttest(t *testing.T, tn *testNode, id string) (*cloisterv1.AttestResponse, error) {
	raw := newRawSession(t, tn, id, [32]byte{})
	nonce := make([]byte, protocol.NonceSize)
	resp, err := raw.svc.Attest(context.Background(), connect.NewRequest(&cloisterv1.AttestRequest{SessionId: id, Nonce: nonce}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func TestAttackExpiredPolicy(t *testing.T) {
	s := newScenario(t)
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	tn := startNodeClock(t, filepath.Join(t.TempDir(), "node"), nil, clock)
	c := dial(t, tn)
	ctx := context.Background()
	// Already expired at creation.
	old := s.policyDoc(t, tn.platformKey(), func(m map[string]any) {
		m["expires"] = time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	})
	if _, err := c.CreateSession(ctx, old); !errors.Is(err, client.ErrPolicyExpired) {
		t.Fatalf("SDK create under an expired policy: %v, want ErrPolicyExpired", err)
	}
	// The node refuses it too, to a client that sends it anyway.
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: node.NodeServerName, InsecureSkipVerify: true, NextProtos: []string{"h2"}}, ForceAttemptHTTP2: true}}
	defer hc.CloseIdleConnections()
	_, err := cloisterv1connect.NewNodeServiceClient(hc, tn.url).CreateSession(ctx, connect.NewRequest(&cloisterv1.CreateSessionRequest{Policy: old}))
	wantRefusal(t, err, connect.CodeFailedPrecondition, "policy-not-expired", "")
	// Expires while the session is provisioning.
	doc := s.policyDoc(t, tn.platformKey(), func(m map[string]any) {
		m["expires"] = time.Now().Add(10 * time.Minute).UTC().Format(time.RFC3339)
	})
	as := createAttested(ctx, t, c, doc)
	skew.Store(int64(time.Hour))
	_, err = as.UploadProgram(ctx, s.alice.key, "psi-sum.wasm", s.prog.Wasm)
	wantRefusal(t, err, connect.CodeFailedPrecondition, "policy-not-expired", "")
	// Erasing stays possible.
	if err := as.Close(ctx, s.dave.key); err == nil || !strings.Contains(err.Error(), "fresh-request") {
		// dave's clock is an hour behind the node's: freshness refuses it.
		t.Fatalf("close with a stale timestamp: %v, want fresh-request refusal", err)
	}
	skew.Store(0)
	if err := as.Close(ctx, s.dave.key); err != nil {
		t.Fatalf("close after expiry: %v", err)
	}
}

func TestAttackNonPrincipalCloses(t *testing.T) {
	s := newScenario(t)
	tn, c, as, _ := setup(t, s)
	ctx := context.Background()
	mallory := newParty(t, "mallory")
	if err := as.Close(ctx, mallory.key); !errors.Is(err, client.ErrNotPrincipal) {
		t.Fatalf("SDK close with a stranger's key: %v, want ErrNotPrincipal", err)
	}
	raw := newRawSession(t, tn, as.ID(), as.PolicyHash())
	_, err := raw.svc.CloseSession(ctx, connect.NewRequest(&cloisterv1.CloseSessionRequest{SessionId: as.ID(),
		Auth: raw.sign(t, mallory.key, "mallory", protocol.OpClose, "", nil)}))
	wantRefusal(t, err, connect.CodePermissionDenied, "principals-close", "mallory")
	_, err = raw.svc.CloseSession(ctx, connect.NewRequest(&cloisterv1.CloseSessionRequest{SessionId: as.ID(),
		Auth: raw.sign(t, mallory.key, "alice", protocol.OpClose, "", nil)}))
	wantRefusal(t, err, connect.CodeUnauthenticated, "signed-by-principal", "alice")
	st, err := c.Status(ctx, as.ID(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != cloisterv1.SessionState_SESSION_STATE_PROVISIONING {
		t.Fatalf("session is %v after refused closes", st.State)
	}
}

// A session RPC that does not come over the session's own TLS name (so
// over a key no client attested) is refused.
func TestAttackSessionCallOverNodeConnection(t *testing.T) {
	s := newScenario(t)
	tn, _, as, _ := setup(t, s)
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: node.NodeServerName, InsecureSkipVerify: true, NextProtos: []string{"h2"}}, ForceAttemptHTTP2: true}}
	defer hc.CloseIdleConnections()
	svc := cloisterv1connect.NewSessionServiceClient(hc, tn.url)
	_, err := svc.Attest(context.Background(), connect.NewRequest(&cloisterv1.AttestRequest{SessionId: as.ID(), Nonce: make([]byte, 32)}))
	wantRefusal(t, err, connect.CodePermissionDenied, "session-connection", "")
}

// A node whose certificate is not certified by a platform key the policy
// lists is refused before the policy is even sent.
func TestAttackImpostorNode(t *testing.T) {
	s := newScenario(t)
	genuine := startNode(t, filepath.Join(t.TempDir(), "real"), nil)
	rec := &recorder{}
	impostor := startNode(t, filepath.Join(t.TempDir(), "impostor"), rec.wrap)
	doc := s.policyDoc(t, genuine.platformKey(), nil)
	c, err := client.Dial(context.Background(), impostor.url, client.WithPlatformKeys(genuine.PlatformKey()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.CreateSession(context.Background(), doc); !errors.Is(err, client.ErrNodeIdentity) {
		t.Fatalf("create on an impostor node: %v, want ErrNodeIdentity", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.paths) != 0 {
		t.Fatalf("the impostor received %v", rec.paths)
	}
}

// scrapeMetrics reads the node's /metrics over TLS.
func scrapeMetrics(t *testing.T, tn *testNode) string {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(tn.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

// Only a reader of the output can hold a result long poll open: anyone
// else is refused at once, not after the wait.
func TestAttackLongPollByNonReader(t *testing.T) {
	s := newScenario(t)
	tn, _, as, _ := setup(t, s)
	raw := newRawSession(t, tn, as.ID(), as.PolicyHash())
	mallory := newParty(t, "mallory")
	for _, tc := range []struct {
		key       *keys.PrivateKey
		principal string
		code      connect.Code
		rule      string
	}{
		{mallory.key, "mallory", connect.CodePermissionDenied, "signed-by-principal"},
		{mallory.key, "dave", connect.CodeUnauthenticated, "signed-by-principal"},
		{s.carol.key, "carol", connect.CodePermissionDenied, "readers-only"},
	} {
		start := time.Now()
		_, err := raw.svc.GetResult(context.Background(), connect.NewRequest(&cloisterv1.GetResultRequest{SessionId: as.ID(), Output: "result.json",
			WaitMs: 60_000, Auth: raw.sign(t, tc.key, tc.principal, protocol.OpGetResult, "result.json", nil)}))
		wantRefusal(t, err, tc.code, tc.rule, tc.principal)
		// Refused before the minute it asked to wait (the node's longest
		// long poll) was over: not a speed bound.
		if d := time.Since(start); d >= time.Minute {
			t.Fatalf("refusing %q took %s: the request waited before it was checked", tc.principal, d)
		}
	}
}

// The SDK does not send data under a policy that has expired by its own
// clock, whatever the node would do with it.
func TestClientSendsNothingUnderExpiredPolicy(t *testing.T) {
	s := newScenario(t)
	tn := startNode(t, filepath.Join(t.TempDir(), "node"), nil)
	doc := s.policyDoc(t, tn.platformKey(), nil)
	var skew atomic.Int64
	c, err := client.Dial(context.Background(), tn.url, client.WithPlatformKeys(tn.PlatformKey()),
		client.WithClock(func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	as := createAttested(ctx, t, c, doc)
	skew.Store(int64(2 * time.Hour)) // the policy expires in one
	if _, err := as.UploadInput(ctx, s.bob.key, "customers.csv", s.input(t, "customers.csv")); !errors.Is(err, client.ErrPolicyExpired) {
		t.Fatalf("upload under an expired policy: %v, want ErrPolicyExpired", err)
	}
	if _, err := c.CreateSession(ctx, doc); !errors.Is(err, client.ErrPolicyExpired) {
		t.Fatalf("create under an expired policy: %v, want ErrPolicyExpired", err)
	}
	if m := scrapeMetrics(t, tn); strings.Contains(m, `method="UploadInput"`) || strings.Contains(m, `cloister_requests_total{method="CreateSession",outcome="ok"} 2`) {
		t.Fatalf("the node received a request:\n%s", m)
	}
}

// Several principals attesting one session from one process resume its
// TLS session after the first full handshake, and the resumed connections
// still reach the attested key: uploads over them succeed, and a session
// of another key is not resumed into.
func TestAttestResumesTLSSessions(t *testing.T) {
	s := newScenario(t)
	var mu sync.Mutex
	var resumed []bool
	_, doc, c := s.nodeWithPolicy(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/Attest") && r.TLS != nil {
				mu.Lock()
				resumed = append(resumed, r.TLS.DidResume)
				mu.Unlock()
			}
			h.ServeHTTP(w, r)
		})
	})
	ctx := context.Background()
	id, err := c.CreateSession(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	var sessions []*client.AttestedSession
	for range 3 {
		as, err := c.Attest(ctx, id, mustParse(t, doc))
		if err != nil {
			t.Fatal(err)
		}
		defer as.CloseIdleConnections()
		sessions = append(sessions, as)
	}
	mu.Lock()
	got := slices.Clone(resumed)
	mu.Unlock()
	if len(got) != 3 || got[0] || !got[1] || !got[2] {
		t.Fatalf("Attest connections resumed: %v, want [false true true]", got)
	}
	if sessions[1].TLSKeyHash() != sessions[0].TLSKeyHash() {
		t.Fatalf("resumed session pinned %s, the first %s", sessions[1].TLSKeyHash(), sessions[0].TLSKeyHash())
	}
	if _, err := sessions[2].UploadInput(ctx, s.bob.key, "customers.csv", s.input(t, "customers.csv")); err != nil {
		t.Fatalf("upload over a resumed connection: %v", err)
	}
	// Another session of the same node: a full handshake to its own key.
	id2, err := c.CreateSession(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	as2, err := c.Attest(ctx, id2, mustParse(t, doc))
	if err != nil {
		t.Fatal(err)
	}
	defer as2.CloseIdleConnections()
	mu.Lock()
	defer mu.Unlock()
	if resumed[len(resumed)-1] {
		t.Fatal("attesting another session resumed a TLS session of the first")
	}
	if as2.TLSKeyHash() == sessions[0].TLSKeyHash() {
		t.Fatal("two sessions share a TLS key")
	}
}
