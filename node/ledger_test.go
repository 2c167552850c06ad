package node_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/ledger"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/node"
)

// startLedgerNode starts a node over dir that records on e.
func startLedgerNode(t *testing.T, dir string, e *ledger.Embedded) *testNode {
	t.Helper()
	n, err := node.New(context.Background(), node.Options{DataDir: dir, Runner: runtime, NoSync: true,
		Ledger: e, LedgerName: ledger.Origin(e.ChainID()),
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	go n.Serve(ln)
	return &testNode{Node: n, url: "https://" + ln.Addr().String()}
}

// ledgerAndClient opens an embedded ledger and a client of its HTTP API.
func ledgerAndClient(t *testing.T) (*ledger.Embedded, *lclient.Client) {
	t.Helper()
	e := node.OpenTestLedger(t)
	srv := httptest.NewServer(e.Handler())
	t.Cleanup(srv.Close)
	lc, err := lclient.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return e, lc
}

// TestLedgerRecordsSession runs a session on a node recording on a real
// embedded ledger, then reads the ledger back through its HTTP API: one
// registration across a restart, one entry per step of the right kind,
// hashes but no data, and a result commitment signed by the attested
// session key.
func TestLedgerRecordsSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	e, lc := ledgerAndClient(t)

	dir := filepath.Join(tmp, "node")
	tn := startLedgerNode(t, dir, e)
	reg, ok := tn.RegistrationIndex()
	if !ok {
		t.Fatal("node with a ledger reports no registration")
	}
	if _, err := os.Stat(filepath.Join(dir, node.RegistrationFile)); err != nil {
		t.Fatal(err)
	}
	// A restart finds the registration on disk and does not register again.
	tn.Close()
	tn = startLedgerNode(t, dir, e)
	defer tn.Close()
	if again, _ := tn.RegistrationIndex(); again != reg {
		t.Fatalf("registration index %d after restart, was %d", again, reg)
	}

	s := newScenario(t)
	wasm := readTestdata(t, "sum.wasm")
	doc := s.sumPolicy(t, tn.platformKey(), "sum.wasm", wasm)
	c := dial(t, tn)
	as := createAttested(ctx, t, c, doc)
	s.provisionSum(t, as, "sum.wasm", wasm)
	got, err := as.Result(ctx, s.dave.key, "sum")
	if err != nil || string(got) != byteSum("hello", "world") {
		t.Fatalf("result %q, %v", got, err)
	}
	st, err := as.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The result was asked for while the program ran: the fetch is dated
	// when it happened, after the run.
	for i := 1; i < len(st.Events); i++ {
		if st.Events[i].UnixMs < st.Events[i-1].UnixMs {
			t.Errorf("event %d (%s) at %d is dated before event %d (%s) at %d", i, st.Events[i].Kind, st.Events[i].UnixMs, i-1, st.Events[i-1].Kind, st.Events[i-1].UnixMs)
		}
	}
	if err := as.Close(ctx, s.dave.key); err != nil {
		t.Fatal(err)
	}
	if !tn.WaitLedger(30 * time.Second) {
		t.Fatal("the node's ledger entries are still pending after 30 s")
	}

	page, err := lc.Entries(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	type seen struct {
		kind, event string
		index       uint64
		body        map[string]any
		raw         []byte
	}
	var regs int
	var entries []seen
	for _, en := range page.Entries {
		se := en.Signed
		if err := se.VerifySignature(); err != nil {
			t.Fatalf("entry %d: %v", en.Index, err)
		}
		if se.Entry.Submitter != protocol.FormatEd25519Key(tn.PlatformKey()) {
			t.Fatalf("entry %d submitted by %s, not the platform key", en.Index, se.Entry.Submitter)
		}
		var body map[string]any
		if err := json.Unmarshal(se.Entry.Body, &body); err != nil {
			t.Fatal(err)
		}
		// The inputs; the result (a short number) could turn up by chance
		// in a timestamp, but it is only ever sealed.
		for _, secret := range []string{"hello", "world"} {
			if bytes.Contains(en.Tx, []byte(secret)) {
				t.Errorf("entry %d (%s) carries data %q: %s", en.Index, se.Entry.Kind, secret, en.Tx)
			}
		}
		if se.Entry.Kind == ledger.KindNodeRegistered {
			regs++
			if en.Index != reg {
				t.Errorf("registration at %d, node remembers %d", en.Index, reg)
			}
			evj, err := base64.StdEncoding.DecodeString(body["evidence"].(string))
			var ev attest.Evidence
			if err != nil || json.Unmarshal(evj, &ev) != nil || ev.Class != attest.ClassSoftware || len(ev.Data) == 0 || body["class"] != "software" {
				t.Errorf("registration body %s: evidence does not decode to software evidence (%v)", se.Entry.Body, err)
			}
			continue
		}
		ev, _ := body["event"].(string)
		entries = append(entries, seen{string(se.Entry.Kind), ev, en.Index, body, en.Tx})
		if body["session"] != as.ID() {
			t.Errorf("entry %d names session %v, want %s", en.Index, body["session"], as.ID())
		}
	}
	if regs != 1 {
		t.Fatalf("%d node.registered entries, want 1", regs)
	}
	want := []struct{ kind, event string }{
		{"session.event", node.EventSessionCreated},
		{"session.event", node.EventProgramUploaded},
		{"session.event", node.EventInputUploaded},
		{"session.event", node.EventInputUploaded},
		{"result.committed", ""},
		{"session.event", node.EventResultFetched},
		{"session.event", node.EventSessionClosed},
	}
	if len(entries) != len(want) {
		t.Fatalf("%d session entries, want %d: %+v", len(entries), len(want), entries)
	}
	for i, w := range want {
		if entries[i].kind != w.kind || entries[i].event != w.event {
			t.Errorf("entry %d is %s/%s, want %s/%s", entries[i].index, entries[i].kind, entries[i].event, w.kind, w.event)
		}
		if entries[i].index <= reg {
			t.Errorf("session entry at %d, not after the registration at %d", entries[i].index, reg)
		}
	}
	created := entries[0].body
	if ph := created["policy_hash"]; ph != mustParse(t, doc).HashHex() {
		t.Errorf("session.created policy_hash %v", ph)
	}
	if d, _ := created["evidence_sha256"].(string); len(d) != 64 || d == "0000000000000000000000000000000000000000000000000000000000000000" {
		t.Errorf("session.created evidence_sha256 %q", d)
	}
	if p := entries[2].body; p["principal"] != "bob" || p["name"] != "a" || len(p["envelope_sha256"].(string)) != 64 {
		t.Errorf("input entry body %v", p)
	}

	// The result commitment verifies under the session key dave pinned,
	// and not once altered.
	se, err := verify.DecodeEntry(entries[4].raw)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := client.ParseResultCommitment(se.Entry.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Verify(as.SessionKey()); err != nil {
		t.Fatal(err)
	}
	if env := rc.Outputs["sum"]["dave"]; len(env) != 64 {
		t.Fatalf("commitment outputs %v", rc.Outputs)
	}
	h := rc.Outputs["sum"]["dave"]
	flip := "0"
	if h[0] == '0' {
		flip = "1"
	}
	rc.Outputs["sum"]["dave"] = flip + h[1:]
	if err := rc.Verify(as.SessionKey()); err == nil {
		t.Fatal("an altered commitment verified")
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err := rc.Verify(other); err == nil {
		t.Fatal("a commitment verified under a key that is not the attested one")
	}

	// Status (taken before the close) shows each event's ledger index.
	if len(st.Events) != len(entries)-1 {
		t.Fatalf("status lists %d events, want %d", len(st.Events), len(entries)-1)
	}
	for i, ev := range st.Events {
		if ev.LedgerIndex != entries[i].index {
			t.Errorf("status event %d (%s) has ledger index %d, the ledger has it at %d", i, ev.Kind, ev.LedgerIndex, entries[i].index)
		}
	}
	if st.Programs[0].EventIndex != entries[1].index || st.Inputs[0].EventIndex != entries[2].index || st.Inputs[1].EventIndex != entries[3].index {
		t.Errorf("status slot indexes %d %d %d", st.Programs[0].EventIndex, st.Inputs[0].EventIndex, st.Inputs[1].EventIndex)
	}
}

// TestLedgerRecordsFailedRun: a run that fails is a session.event saying
// how it ended (outcome, exit status), without the reason text, and no
// result is committed.
func TestLedgerRecordsFailedRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	e, lc := ledgerAndClient(t)
	tn := startLedgerNode(t, filepath.Join(tmp, "node"), e)
	defer tn.Close()

	s := newScenario(t)
	wasm := readTestdata(t, "spin.wasm")
	doc := s.policyDoc(t, tn.platformKey(), func(m map[string]any) {
		m["name"] = "spin"
		m["programs"] = []any{map[string]any{"name": "spin.wasm", "sha256": sha256hex(wasm), "provider": "alice"}}
		m["inputs"] = []any{map[string]any{"name": "a", "provider": "bob"}, map[string]any{"name": "b", "provider": "carol"}}
		m["outputs"] = []any{map[string]any{"name": "sum", "readers": []string{"dave"}}}
		m["limits"] = map[string]any{"memory": "16MiB", "timeout": "200ms", "max_output": "4KiB"}
	})
	c := dial(t, tn)
	as := createAttested(ctx, t, c, doc)
	s.provisionSum(t, as, "spin.wasm", wasm)
	st, err := as.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Reason == "" || st.Report == nil || st.Report.Outcome == "exited" {
		t.Fatalf("spin with a 200 ms limit ended %v: %s", st.State, st.Reason)
	}
	page, err := lc.Entries(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	last := page.Entries[len(page.Entries)-1].Signed.Entry
	var body map[string]any
	if err := json.Unmarshal(last.Body, &body); err != nil {
		t.Fatal(err)
	}
	if last.Kind != ledger.KindSessionEvent || body["event"] != node.EventRunFinished || body["state"] != "failed" ||
		body["outcome"] != st.Report.Outcome || body["reason"] != nil {
		t.Fatalf("last entry %s %s, want the failed run (outcome %s) without its reason", last.Kind, last.Body, st.Report.Outcome)
	}
	for _, en := range page.Entries {
		if en.Signed.Entry.Kind == ledger.KindResultCommitted {
			t.Fatalf("a failed run committed a result: %s", en.Tx)
		}
	}
	if ev := st.Events[len(st.Events)-1]; ev.Kind != node.EventRunFinished || ev.LedgerIndex != page.Entries[len(page.Entries)-1].Index {
		t.Fatalf("status' last event %s at %d", ev.Kind, ev.LedgerIndex)
	}
}
