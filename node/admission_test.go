package node_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/cloister/v1/cloisterv1connect"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/node"
)

// dialAs is a client of tn that signs its creates with creator (and sends
// token, if any).
func dialAs(t testing.TB, tn *testNode, creator *keys.PrivateKey, token string, more ...client.Option) *client.Client {
	t.Helper()
	opts := append([]client.Option{client.WithPlatformKeys(tn.PlatformKey())}, more...)
	if creator != nil {
		opts = append(opts, client.WithCreator(creator))
	}
	if token != "" {
		opts = append(opts, client.WithAdmissionToken(token))
	}
	c, err := client.Dial(context.Background(), tn.url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newKey(t testing.TB) *keys.PrivateKey {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// wantRule checks that err is a refusal by rule, with code code, whose
// message contains says.
func wantRule(t *testing.T, err error, code connect.Code, rule, says string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want a refusal by rule %q", rule)
	}
	if got := connect.CodeOf(err); got != code || !strings.Contains(err.Error(), `rule "`+rule+`"`) || !strings.Contains(err.Error(), says) {
		t.Fatalf("%v (%v); want %v by rule %q saying %q", err, got, code, rule, says)
	}
}

// storedSessions counts the sessions in a node's data directory.
func storedSessions(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "sessions"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".log") && e.Name() != "closed.log" {
			n++
		}
	}
	return n
}

// Issue 11, seen problem 3: an anonymous client read the platform key from
// GetNodeInfo, named it in a throwaway policy padded to 1 MiB, and created
// sessions in a loop. On an allow-list node nothing it sends is stored,
// whether unsigned, signed by its own key, or naming that key in the
// policy as a principal; the listed creator is served.
func TestAttackAnonymousSessionCreation(t *testing.T) {
	s := newScenario(t)
	owner := newKey(t)
	opts := testOptions(t, filepath.Join(t.TempDir(), "node"))
	opts.Admission = node.Admission{Mode: node.AdmitAllowList, AllowKeys: []ed25519.PublicKey{owner.Public().Signing}}
	tn := serveNode(t, opts)
	ctx := context.Background()
	info, err := dial(t, tn).NodeInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mallory := newKey(t)
	doc := s.policyDoc(t, info.PlatformKey, func(d map[string]any) {
		d["principals"] = append(d["principals"].([]any), map[string]any{"id": "mallory",
			"signing_key": mallory.Public().SigningString(), "roles": []string{"data-provider"}})
	})
	padded := append(bytes.Repeat([]byte(" "), 1<<20-len(doc)-16), doc...)
	_, err = dial(t, tn).CreateSession(ctx, padded)
	wantRule(t, err, connect.CodeUnauthenticated, "admission", "sign the create request")
	_, err = dialAs(t, tn, mallory, "").CreateSession(ctx, padded)
	wantRule(t, err, connect.CodePermissionDenied, "admission", "not on this node's allow-list")
	if n := storedSessions(t, tn.dir); n != 0 {
		t.Fatalf("%d sessions stored after refusals", n)
	}
	if _, err := dialAs(t, tn, owner, "").CreateSession(ctx, padded); err != nil {
		t.Fatalf("the listed creator was refused: %v", err)
	}
	// What is stored is the canonical policy, not the megabyte of padding.
	if st := sessionsDirSize(t, tn.dir); st > 256<<10 {
		t.Fatalf("sessions/ holds %d bytes for one session of a %d-byte canonical policy", st, len(mustParse(t, doc).Canonical()))
	}
	m := scrapeMetrics(t, tn)
	if !strings.Contains(m, `cloister_refusals_total{rule="admission"} 2`+"\n") {
		t.Fatalf("refusals not counted:\n%s", m)
	}
}

func sessionsDirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(filepath.Join(dir, "sessions"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// A create request is single-use and bound to its policy bytes.
func TestCreateRequestSignature(t *testing.T) {
	s := newScenario(t)
	owner := newKey(t)
	opts := testOptions(t, filepath.Join(t.TempDir(), "node"))
	opts.Admission = node.Admission{Mode: node.AdmitAllowList, AllowKeys: []ed25519.PublicKey{owner.Public().Signing}}
	tn := serveNode(t, opts)
	doc := s.policyDoc(t, tn.platformKey(), nil)
	hc := rawHTTP(t, node.NodeServerName, true)
	svc := cloisterv1connect.NewNodeServiceClient(hc, tn.url)
	ctx := context.Background()
	nonce := make([]byte, 16)
	rand.Read(nonce)
	ms := time.Now().UnixMilli()
	req := &cloisterv1.CreateSessionRequest{Policy: doc, Auth: &cloisterv1.SignedRequest{Principal: owner.Public().SigningString(), UnixMs: ms, Nonce: nonce,
		Signature: owner.Sign(protocol.RequestMessage("", protocol.OpCreateSession, "", sha256.Sum256(doc), [32]byte{}, ms, nonce))}}
	if _, err := svc.CreateSession(ctx, connect.NewRequest(req)); err != nil {
		t.Fatal(err)
	}
	_, err := svc.CreateSession(ctx, connect.NewRequest(req))
	wantRule(t, err, connect.CodePermissionDenied, "admission", "replays")
	// The signature over other policy bytes.
	req.Policy = append(bytes.Clone(doc), ' ')
	req.Auth.Nonce = append(bytes.Clone(nonce), 1)
	_, err = svc.CreateSession(ctx, connect.NewRequest(req))
	wantRule(t, err, connect.CodeUnauthenticated, "admission", "does not verify")
	if n := storedSessions(t, tn.dir); n != 1 {
		t.Fatalf("%d sessions stored, want 1", n)
	}
}

// Token mode: a token signed by a trusted operator admits its subject, on
// the node it names, until it expires; nothing else does.
func TestAdmissionTokens(t *testing.T) {
	s := newScenario(t)
	operator, other, org := newKey(t), newKey(t), newKey(t)
	opts := testOptions(t, filepath.Join(t.TempDir(), "node"))
	opts.Admission = node.Admission{Mode: node.AdmitToken, TokenIssuers: []ed25519.PublicKey{operator.Public().Signing}}
	tn := serveNode(t, opts)
	doc := s.policyDoc(t, tn.platformKey(), nil)
	ctx := context.Background()
	orgPub := org.Public().Signing
	issue := func(issuer *keys.PrivateKey, subject, nodeKey ed25519.PublicKey, exp time.Time) string {
		tok, err := node.IssueAdmissionToken(issuer, subject, nodeKey, exp)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	hour := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name, token, says string
	}{
		{"none", "", "presented none"},
		{"untrusted issuer", issue(other, orgPub, nil, hour), "does not trust"},
		{"another subject", issue(operator, other.Public().Signing, nil, hour), "not the creator"},
		{"another node", issue(operator, orgPub, other.Public().Signing, hour), "for node"},
		{"expired", issue(operator, orgPub, nil, time.Now().Add(-time.Minute)), "expired"},
		{"tampered", tamper(issue(operator, orgPub, nil, hour)), "admission token"},
	} {
		_, err := dialAs(t, tn, org, tc.token).CreateSession(ctx, doc)
		if err == nil || !strings.Contains(err.Error(), `rule "admission"`) || !strings.Contains(err.Error(), tc.says) {
			t.Fatalf("%s: %v; want a refusal by rule admission saying %q", tc.name, err, tc.says)
		}
	}
	for _, tok := range []string{issue(operator, orgPub, nil, hour), issue(operator, orgPub, tn.PlatformKey(), hour)} {
		if _, err := dialAs(t, tn, org, tok).CreateSession(ctx, doc); err != nil {
			t.Fatalf("a valid token was refused: %v", err)
		}
	}
}

// tamper changes one character of a token's payload.
func tamper(tok string) string {
	b := []byte(tok)
	i := len("cat1.") + 10
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// Consortium mode: the ledger's members, admitted by a validator.
func TestAdmissionConsortium(t *testing.T) {
	s := newScenario(t)
	ledgerDir := filepath.Join(t.TempDir(), "ledger")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := ledger.OpenEmbedded(ctx, ledgerDir, ledger.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	org, outsider := newKey(t), newKey(t)
	opts := testOptions(t, filepath.Join(t.TempDir(), "node"))
	opts.Ledger, opts.LedgerName = e, ledger.Origin(e.ChainID())
	opts.Admission = node.Admission{Mode: node.AdmitConsortium, Members: e}
	tn := serveNode(t, opts)
	doc := s.policyDoc(t, tn.platformKey(), nil)
	_, err = dialAs(t, tn, outsider, "").CreateSession(ctx, doc)
	wantRule(t, err, connect.CodePermissionDenied, "admission", "not a consortium member")
	vk, err := ledger.ValidatorKey(ledgerDir)
	if err != nil {
		t.Fatal(err)
	}
	se, err := verify.NewEntry(vk, ledger.KindMemberAdmitted, map[string]any{"member": protocol.FormatEd25519Key(org.Public().Signing), "name": "org"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Append(ctx, se); err != nil {
		t.Fatal(err)
	}
	if _, err := dialAs(t, tn, org, "").CreateSession(ctx, doc); err != nil {
		t.Fatalf("a member was refused: %v", err)
	}
	_, err = dialAs(t, tn, outsider, "").CreateSession(ctx, doc)
	wantRule(t, err, connect.CodePermissionDenied, "admission", "not a consortium member")
}

// Quotas hold per creator and in total, name the limit and the flag that
// raises it, and are given back when sessions go.
func TestQuotas(t *testing.T) {
	s := newScenario(t)
	a, b, c := newKey(t), newKey(t), newKey(t)
	opts := testOptions(t, filepath.Join(t.TempDir(), "node"))
	opts.Admission = node.Admission{Quotas: node.Quotas{MaxSessions: 3, MaxSessionsPerCreator: 2,
		MaxStoredBytesPerCreator: 64 << 10, CreateRate: 1000, CreateRatePerCreator: 1000}}
	tn := serveNode(t, opts)
	doc := s.policyDoc(t, tn.platformKey(), nil)
	ctx := context.Background()
	ca, cb, cc := dialAs(t, tn, a, ""), dialAs(t, tn, b, ""), dialAs(t, tn, c, "")
	id1, err := ca.CreateSession(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.CreateSession(ctx, doc); err != nil {
		t.Fatal(err)
	}
	_, err = ca.CreateSession(ctx, doc)
	wantRule(t, err, connect.CodeResourceExhausted, "max-sessions-per-creator", "--max-sessions-per-creator")
	if _, err := cb.CreateSession(ctx, doc); err != nil {
		t.Fatal(err)
	}
	_, err = cc.CreateSession(ctx, doc)
	wantRule(t, err, connect.CodeResourceExhausted, "max-sessions", "--max-sessions")
	// Stored bytes: an upload past a's allowance is refused, not stored.
	as, err := ca.Attest(ctx, id1, mustParse(t, doc))
	if err != nil {
		t.Fatal(err)
	}
	defer as.CloseIdleConnections()
	_, err = as.UploadInput(ctx, s.bob.key, "customers.csv", bytes.Repeat([]byte("x"), 80<<10))
	wantRule(t, err, connect.CodeResourceExhausted, "max-stored-per-creator", "--max-stored-per-creator")
	// Closing one of a's sessions lets c create.
	if err := as.Close(ctx, s.bob.key); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.CreateSession(ctx, doc); err != nil {
		t.Fatalf("after a close: %v", err)
	}
}

// The creation rate is limited per creator (unsigned requests count per
// address) and in total, with x/time/rate; the refusal says when to retry.
func TestCreateRate(t *testing.T) {
	s := newScenario(t)
	opts := testOptions(t, filepath.Join(t.TempDir(), "node"))
	opts.Admission = node.Admission{Quotas: node.Quotas{CreateRate: 1000, CreateRatePerCreator: 2}}
	tn := serveNode(t, opts)
	doc := s.policyDoc(t, tn.platformKey(), nil)
	ctx := context.Background()
	c := dial(t, tn)
	ok, refusedN := 0, 0
	var last error
	for range 10 {
		_, err := c.CreateSession(ctx, doc)
		switch {
		case err == nil:
			ok++
		case strings.Contains(err.Error(), `rule "create-rate-per-creator"`):
			refusedN++
			last = err
		default:
			t.Fatal(err)
		}
	}
	// A burst of 4 (twice the rate), then about 2/s.
	if ok < 4 || ok > 6 || refusedN == 0 {
		t.Fatalf("%d created, %d refused of 10 at once; want the burst of 4 (and a few)", ok, refusedN)
	}
	wantRule(t, last, connect.CodeResourceExhausted, "create-rate-per-creator", "retry in")
	if !strings.Contains(last.Error(), "addr:127.0.0.1") {
		t.Fatalf("unsigned creates are not counted by address: %v", last)
	}
	// Another creator has its own allowance.
	if _, err := dialAs(t, tn, newKey(t), "").CreateSession(ctx, doc); err != nil {
		t.Fatalf("another creator: %v", err)
	}
}

// The sweeper erases sessions whose policy expired and those idle too
// long, records who erased them, and gives their quota back.
func TestSweeper(t *testing.T) {
	s := newScenario(t)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	opts := testOptions(t, filepath.Join(t.TempDir(), "node"))
	opts.Now = clock
	opts.Admission = node.Admission{Quotas: node.Quotas{SessionIdle: time.Hour, SweepEvery: 20 * time.Millisecond, MaxSessionsPerCreator: 2}}
	tn := serveNode(t, opts)
	ctx := context.Background()
	c := dialAs(t, tn, newKey(t), "", client.WithClock(clock))
	short := s.policyDoc(t, tn.platformKey(), func(d map[string]any) {
		d["expires"] = time.Now().Add(30 * time.Minute).UTC().Format(time.RFC3339)
	})
	long := s.policyDoc(t, tn.platformKey(), func(d map[string]any) {
		d["expires"] = time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	})
	expiring, err := c.CreateSession(ctx, short)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := c.CreateSession(ctx, long)
	if err != nil {
		t.Fatal(err)
	}
	advance(31 * time.Minute) // past the short policy's expiry, not idle yet
	st := waitClosed(t, c, expiring)
	if !strings.Contains(st.Reason, "node: policy") || !strings.Contains(st.Reason, "expired") {
		t.Fatalf("expired session: %q", st.Reason)
	}
	if st, _ := c.Status(ctx, idle, 0); st.State.String() == "SESSION_STATE_CLOSED" {
		t.Fatal("a session 31 minutes idle was swept (idle limit 1 h)")
	}
	advance(time.Hour)
	st = waitClosed(t, c, idle)
	if !strings.Contains(st.Reason, "no step for") {
		t.Fatalf("idle session: %q", st.Reason)
	}
	m := scrapeMetrics(t, tn)
	for _, want := range []string{`cloister_sessions_swept_total{reason="expired"} 1`, `cloister_sessions_swept_total{reason="idle"} 1`, "cloister_stored_bytes 0"} {
		if !strings.Contains(m, want+"\n") {
			t.Fatalf("metrics lack %s:\n%s", want, m)
		}
	}
	// Both quota slots are free again.
	for range 2 {
		if _, err := c.CreateSession(ctx, long); err != nil {
			t.Fatalf("after sweeping: %v", err)
		}
	}
}

func waitClosed(t *testing.T, c *client.Client, id string) *client.Status {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := c.Status(context.Background(), id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if st.State.String() == "SESSION_STATE_CLOSED" {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s still %v", id, st.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Below the free-space reserve the node refuses new sessions and uploads,
// naming the reserve.
func TestDiskReserveRefusesNewWork(t *testing.T) {
	s := newScenario(t)
	opts := testOptions(t, filepath.Join(t.TempDir(), "node"))
	opts.Admission = node.Admission{Quotas: node.Quotas{MinFreeBytes: 1 << 60}}
	tn := serveNode(t, opts)
	_, err := dial(t, tn).CreateSession(context.Background(), s.policyDoc(t, tn.platformKey(), nil))
	wantRule(t, err, connect.CodeResourceExhausted, "disk-reserve", "--min-free")
}

// A node in open mode does not serve beyond loopback unless told to.
func TestOpenModeStaysOnLoopback(t *testing.T) {
	any4 := &net.TCPAddr{IP: net.IPv4zero, Port: 7443}
	if err := node.CheckListen(any4, node.Admission{}); err == nil || !strings.Contains(err.Error(), "--allow-open") {
		t.Fatalf("open mode on 0.0.0.0: %v", err)
	}
	for _, adm := range []node.Admission{{AllowOpen: true}, {Mode: node.AdmitAllowList}} {
		if err := node.CheckListen(any4, adm); err != nil {
			t.Fatalf("%+v on 0.0.0.0: %v", adm, err)
		}
	}
	for _, a := range []net.Addr{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, &net.TCPAddr{IP: net.IPv6loopback}} {
		if err := node.CheckListen(a, node.Admission{}); err != nil {
			t.Fatalf("open mode on %v: %v", a, err)
		}
	}
}
