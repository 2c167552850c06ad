package federation_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/console"
	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/federation"
	"github.com/cloisterhq/cloister/guest"
	"github.com/cloisterhq/cloister/internal/fedexample"
	"github.com/cloisterhq/cloister/internal/fedexample/fedmodel"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/ledger"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/model"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/seal"
)

var runtime *isolate.Runtime

func TestMain(m *testing.M) {
	if isolate.IsWorker() {
		os.Exit(isolate.WorkerMain())
	}
	dir, err := os.MkdirTemp("", "cloister-federation-test-")
	if err != nil {
		panic(err)
	}
	runtime, err = isolate.New(context.Background(), isolate.Options{DataDir: dir})
	if err != nil {
		panic(err)
	}
	code := m.Run()
	runtime.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestCallNameIsTheGuests(t *testing.T) {
	if guest.ModelCall != federation.CallName || guest.ModelCalls != federation.CallsName {
		t.Fatalf("guest.ModelCall %q, federation.CallName %q; guest.ModelCalls %q, federation.CallsName %q", guest.ModelCall, federation.CallName, guest.ModelCalls, federation.CallsName)
	}
}

type world struct {
	t          *testing.T
	e          *ledger.Embedded
	lc         *lclient.Client
	org        ed25519.PrivateKey
	initiator  string
	initKey    ed25519.PrivateKey
	holderNode *node.Node
	holderURL  string
	holder     *federation.Holder
	holderOpts federation.HolderOptions
	callerNode *node.Node
	callerAddr string
	caller     *federation.Caller
	admin      *federation.Admin
	model      model.Model
	program    []byte
	logs       *bytes.Buffer
}

func newKey(t *testing.T) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pub(k ed25519.PrivateKey) string {
	return protocol.FormatEd25519Key(k.Public().(ed25519.PublicKey))
}

// newWorld starts an embedded ledger, a hospital's node (holder, with its
// organisation a consortium member and its patients as a local dataset)
// and an initiator's node (caller), each serving TLS on loopback, and
// publishes the hospital's model.
func newWorld(t *testing.T, rows int) *world { return newWorldWith(t, rows, nil, nil) }

// newWorldWith is newWorld with the model edited by edit before it is
// published, and the holder's ledger wrapped by hold.
func newWorldWith(t *testing.T, rows int, edit func(*model.Model), hold func(*lclient.Client) federation.Ledger) *world {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	e, err := ledger.OpenEmbedded(ctx, filepath.Join(tmp, "ledger"), ledger.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	lc, err := console.LedgerClient(e.Handler())
	if err != nil {
		t.Fatal(err)
	}
	ik := newKey(t)
	w := &world{t: t, e: e, lc: lc, org: newKey(t), initiator: pub(ik), initKey: ik, logs: &bytes.Buffer{}}
	val, err := ledger.ValidatorKey(filepath.Join(tmp, "ledger"))
	if err != nil {
		t.Fatal(err)
	}
	w.append(val, ledger.KindMemberAdmitted, map[string]any{"member": pub(w.org)})

	log := slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// The holder's node: its listener first, for its endpoint.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.holderURL = "https://" + ln.Addr().String()
	hn, err := node.New(ctx, node.Options{DataDir: filepath.Join(tmp, "holder"), Runner: runtime, NoSync: true, Ledger: e,
		LedgerName: ledger.Origin(e.ChainID()), Endpoint: w.holderURL, Organisation: w.org.Public().(ed25519.PublicKey), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	w.holderNode = hn
	w.holderOpts = federation.HolderOptions{Dir: filepath.Join(tmp, "holder", "federation"), Host: hn, Ledger: lc,
		Organisation: w.org.Public().(ed25519.PublicKey), Logger: log}
	if hold != nil {
		w.holderOpts.Ledger = hold(lc)
	}
	h, err := federation.NewHolder(w.holderOpts)
	if err != nil {
		t.Fatal(err)
	}
	w.holder = h
	h.Mount(hn)
	t.Cleanup(h.Close)
	go hn.Serve(ln)
	t.Cleanup(func() { hn.Close() })

	// The initiator's node.
	w.caller = &federation.Caller{Ledger: lc}
	in, err := node.New(ctx, node.Options{DataDir: filepath.Join(tmp, "initiator"), Runner: runtime, NoSync: true, Ledger: e,
		LedgerName: ledger.Origin(e.ChainID()), Logger: log, HostCalls: map[string]isolate.HostCall{federation.CallName: w.caller.HostCall()},
		SettleHostCalls: w.caller.SettleRun})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	w.caller.Signer = in
	w.callerNode = in
	cln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.callerAddr = cln.Addr().String()
	go in.Serve(cln)

	// The hospital's data and model.
	p, err := examples.Lookup("hospital")
	if err != nil {
		t.Fatal(err)
	}
	w.program = p.Wasm
	data := filepath.Join(tmp, "patients.csv")
	if err := os.WriteFile(data, fedexample.Generate("a", 1, rows), 0o600); err != nil {
		t.Fatal(err)
	}
	if w.admin, err = federation.DialAdmin(ctx, w.holderURL, hn.PlatformKey()); err != nil {
		t.Fatal(err)
	}
	if _, err := w.admin.AddDataset(ctx, w.org, "patients.csv", data); err != nil {
		t.Fatal(err)
	}
	w.model = fedmodel.Hospital("hospital-a/stats", 1, w.program, []string{protocol.FormatEd25519Key(hn.PlatformKey())}, w.initiator)
	w.model.Output.Budget = 12
	if edit != nil {
		edit(&w.model)
	}
	if _, err := w.admin.Publish(ctx, w.org, &w.model, w.program); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) append(k ed25519.PrivateKey, kind verify.Kind, body any) verify.Receipt {
	se, err := verify.NewEntry(k, kind, body)
	if err != nil {
		w.t.Fatal(err)
	}
	rc, err := w.lc.Append(context.Background(), se)
	if err != nil {
		w.t.Fatal(err)
	}
	return rc
}

func (w *world) call(fn string, args any) (*federation.Answer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, _ := json.Marshal(args)
	return w.caller.Call(ctx, federation.Origin{Initiator: w.initiator, Workflow: testWorkflow}, &federation.Request{Model: "hospital-a/stats", Function: fn, Args: b})
}

// testWorkflow is the workflow the tests' calls name.
const testWorkflow = "0123456789abcdef0123456789abcdef"

// receipt waits until the call a's receipt is on the ledger and returns
// its entry.
func (w *world) receipt(a *federation.Answer, workflow string) *lclient.Entry {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := w.caller.Settle(ctx, workflow); err != nil {
		w.t.Fatal(err)
	}
	wf, _ := w.caller.Workflow(workflow)
	for _, c := range wf.Calls {
		if c.Call == a.Call {
			e, err := w.lc.Get(ctx, c.Receipt)
			if err != nil {
				w.t.Fatal(err)
			}
			return e
		}
	}
	w.t.Fatalf("call %s is not in workflow %s", a.Call, workflow)
	return nil
}

func wantRefused(t *testing.T, err error, code, text string) {
	t.Helper()
	var re *federation.RefusedError
	if !errors.As(err, &re) || re.Code != code || !strings.Contains(re.Message, text) {
		t.Fatalf("want a refusal %s naming %q, got %v", code, text, err)
	}
}

// A call runs where the data is and returns only the aggregate, sealed
// to the caller, with a receipt on the ledger; every attack on the
// published spec, the allow-list, the output rule, the holder's identity,
// a replay, the budget and a revocation fails for its own reason.
func TestFederatedCalls(t *testing.T) {
	w := newWorld(t, 60)
	a, err := w.call("count", map[string]any{"column": "age", "op": ">=", "value": 0})
	if err != nil {
		t.Fatalf("count: %v\n%s", err, w.logs)
	}
	var c struct{ Count int }
	if json.Unmarshal(a.Result, &c) != nil || c.Count != 60 || a.Rows != 60 || len(a.Call) != 64 {
		t.Fatalf("count: %+v", a)
	}
	e := w.receipt(a, testWorkflow)
	if e.Signed.Entry.Kind != model.KindCalled || e.Signed.Entry.Submitter != protocol.FormatEd25519Key(w.holderNode.PlatformKey()) {
		t.Fatalf("receipt %d: %+v", e.Index, e)
	}
	// The canary row never leaves in an answer or a receipt.
	if bytes.Contains(a.Result, []byte("CANARY")) || bytes.Contains(e.Tx, []byte("CANARY")) {
		t.Fatal("the canary row left the holder")
	}

	// Outside the published spec: no such function; arguments outside
	// the schema.
	_, err = w.call("export", map[string]any{})
	if err == nil || !strings.Contains(err.Error(), `publishes no function "export"`) {
		t.Fatalf("unpublished function: %v", err)
	}
	_, err = w.call("count", map[string]any{"column": "id", "op": "==", "value": 1})
	wantRefused(t, err, federation.CodeSchema, "published schema")
	// The output rule: a count over fewer than min_rows rows.
	_, err = w.call("count", map[string]any{"column": "age", "op": ">=", "value": 94})
	wantRefused(t, err, federation.CodeOutputRule, "fewer than 5")

	// An initiator not on the allow-list.
	ctx := context.Background()
	_, err = w.caller.Call(ctx, federation.Origin{Initiator: pub(newKey(t))}, &federation.Request{Model: "hospital-a/stats", Function: "count", Args: json.RawMessage(`{"column":"age","op":">=","value":0}`)})
	wantRefused(t, err, federation.CodeNotAllowed, "allow-list")

	// An unpublished model.
	_, err = w.caller.Call(ctx, federation.Origin{Initiator: w.initiator}, &federation.Request{Model: "hospital-z/stats", Function: "count", Args: json.RawMessage(`{}`)})
	if !errors.Is(err, model.ErrNotPublished) {
		t.Fatalf("unpublished model: %v", err)
	}

	// The gradient round matches the same sums computed centrally.
	wts := []float64{0.1, 0.2, -0.1, 0.3, 0.05}
	a, err = w.call("gradient", map[string]any{"weights": wts})
	if err != nil {
		t.Fatal(err)
	}
	var got fedexample.Sums
	json.Unmarshal(a.Result, &got)
	rows, _ := fedexample.Parse(bytes.NewReader(fedexample.Generate("a", 1, 60)))
	want, _ := fedexample.Compute(rows, wts)
	for i := range want.Gradient {
		if d := got.Gradient[i] - want.Gradient[i]; d > 1e-9 || d < -1e-9 {
			t.Fatalf("gradient %v, want %v", got.Gradient, want.Gradient)
		}
	}

	// Revocation: later calls refused, with a clear error.
	w.append(w.org, ledger.KindModelRevoked, model.Revocation{Name: "hospital-a/stats", Version: 1})
	_, err = w.call("count", map[string]any{"column": "age", "op": ">=", "value": 0})
	if !errors.Is(err, model.ErrRevoked) {
		t.Fatalf("call after revocation: %v", err)
	}
}

// The budget per initiator is counted by the holder's node, persisted
// before any result leaves (and by the ledger's receipts): past it, the
// holder releases nothing. Differencing queries (count(age ≥ x) and
// count(age ≥ x+1)) run into it.
func TestBudgetAndHolderDown(t *testing.T) {
	w := newWorld(t, 40)
	n := 0
	var err error
	for i := 0; i < 20 && err == nil; i++ {
		_, err = w.call("count", map[string]any{"column": "age", "op": ">=", "value": 20 + i})
		if err == nil {
			n++
		}
	}
	if n != 12 {
		t.Fatalf("%d calls answered before the refusal, want the budget of 12", n)
	}
	wantRefused(t, err, federation.CodePlan, "spent its budget of 12")

	// The holder's node down: a clear error, no answer.
	w.holderNode.Close()
	_, err = w.call("count", map[string]any{"column": "age", "op": ">=", "value": 0})
	if err == nil || !strings.Contains(err.Error(), "no node serving hospital-a/stats answered") {
		t.Fatalf("holder down: %v", err)
	}
}

// A replayed call — the exact signed message sent again — is refused:
// the holder kept its receipt on disk before it released the first
// answer, so it releases nothing again (and the ledger would take no
// second receipt for its id). A network or scheduler that sends the caller to another node
// than the one the ledger lists fails the TLS pin.
func TestReplayAndSwappedDestination(t *testing.T) {
	w := newWorld(t, 30)
	priv, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	args := []byte(`{"column":"age","op":">=","value":0}`)
	var id [32]byte
	rand.Read(id[:])
	call := federation.Call{ID: hex.EncodeToString(id[:]), Model: "hospital-a/stats", Version: 1, Function: "count", Args: args,
		ArgsSHA256: federation.Digest(args), Initiator: w.initiator, Holder: protocol.FormatEd25519Key(w.holderNode.PlatformKey()),
		HolderCert: federation.Digest(w.holderNode.Certificate().Raw), ReplyKey: seal.MarshalPublicKey(priv.PublicKey())}
	se, err := w.callerNode.SignEntry(federation.KindCall, call)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	send := func() (int, string) {
		resp, err := hc.Post(w.holderURL+federation.PathCall, "application/octet-stream", bytes.NewReader(federation.Frame(se)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := send(); code != http.StatusOK {
		t.Fatalf("first call: %d %s", code, body)
	}
	if code, body := send(); code != http.StatusForbidden || !strings.Contains(body, "answered before: a replayed call") {
		t.Fatalf("replayed call: %d %s", code, body)
	}
	// The same call bound to another certificate (captured on another
	// connection): refused before anything runs.
	call.ID, call.HolderCert = strings.Repeat("ab", 32), strings.Repeat("00", 32)
	if se, err = w.callerNode.SignEntry(federation.KindCall, call); err != nil {
		t.Fatal(err)
	}
	if code, body := send(); code != http.StatusBadRequest || !strings.Contains(body, "another TLS certificate") {
		t.Fatalf("call bound to another certificate: %d %s", code, body)
	}

	// Every connection to the holder's endpoint lands on another node.
	swapped := &federation.Caller{Signer: w.callerNode, Ledger: w.lc, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, w.callerAddr)
	}}
	_, err = swapped.Call(context.Background(), federation.Origin{Initiator: w.initiator}, &federation.Request{Model: "hospital-a/stats", Function: "count", Args: args})
	if !errors.Is(err, federation.ErrHolderIdentity) {
		t.Fatalf("swapped destination: %v", err)
	}
}
