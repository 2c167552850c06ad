package node

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/seal"
)

// committedLog is an EventLog that, whenever the node records an event,
// reads the session's state back from disk and fails the test unless the
// step the event reports is already there: the ledger must never show a
// step the node could lose.
type committedLog struct {
	t   *testing.T
	dir string
	st  *store

	mu    sync.Mutex
	kinds []string
}

func (l *committedLog) Record(ctx context.Context, kind string, body any) (uint64, error) {
	id := body.(map[string]any)["session"].(string)
	kind = eventOf(kind, body.(map[string]any))
	if kind == EventSessionClosed {
		b, err := os.ReadFile(filepath.Join(l.dir, "sessions", closedLog))
		if err != nil || !strings.Contains(string(b), id) {
			l.t.Errorf("%s recorded before the tombstone was written: %v", kind, err)
		}
	} else {
		// Entries are appended in the background, so the session may have
		// moved on — or been closed and erased, which happens only after
		// every earlier step was committed — by the time this one is.
		data, err := os.ReadFile(l.st.logPath(id))
		var rec *record
		if err == nil {
			rec, _, err = l.st.parseLog(id, data)
		}
		// Gone, or being erased (overwritten with zeros, then removed).
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, errNoFrame) {
			if b, _ := os.ReadFile(filepath.Join(l.dir, "sessions", closedLog)); !strings.Contains(string(b), id) {
				l.t.Errorf("%s recorded for a session with neither state nor tombstone", kind)
			}
		} else {
			if err != nil {
				l.t.Errorf("%s: %v", kind, err)
				return 0, err
			}
			if !slices.ContainsFunc(rec.Events, func(e eventRecord) bool { return e.Kind == kind }) {
				l.t.Errorf("%s recorded while the state on disk does not hold it", kind)
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.kinds = append(l.kinds, kind)
	return uint64(len(l.kinds)), nil
}

// eventOf names the session event an entry records: session.event entries
// say it in "event"; result.committed ends a run that finished.
func eventOf(kind string, body map[string]any) string {
	if kind == LedgerKindResultCommitted {
		return EventRunFinished
	}
	ev, _ := body["event"].(string)
	return ev
}

// internalSession drives a session through its methods, without TLS: the
// rules and the store are what these tests look at.
type internalSession struct {
	t           *testing.T
	s           *session
	alice, dave *keys.PrivateKey
	wasm        []byte
	programName string
}

// newInternalNode opens a node over dir with programs run in-process,
// without wazero's cancellation checks (which slow loops 8-12×; a stop
// waits for a run to end instead of cutting it short).
func newInternalNode(t *testing.T, dir string, log EventLog) *Node {
	t.Helper()
	rt, err := isolate.New(context.Background(), isolate.Options{InProcess: true, InProcessNoCancel: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	n, err := New(context.Background(), Options{DataDir: dir, Runner: rt, EventLog: log, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// sumPolicyDoc is a policy for testdata/<program>: alice provides the
// program and inputs a and b, dave reads sum.
func sumPolicyDoc(t *testing.T, n *Node, program string, wasm []byte, alice, dave *keys.PrivateKey) []byte {
	sum := sha256.Sum256(wasm)
	doc, err := json.Marshal(map[string]any{
		"version": 1, "name": "internal",
		"principals": []any{
			map[string]any{"id": "alice", "signing_key": alice.Public().SigningString(), "roles": []string{"program-provider", "data-provider"}},
			map[string]any{"id": "dave", "signing_key": dave.Public().SigningString(), "sealing_key": dave.Public().SealingString(), "roles": []string{"result-reader"}},
		},
		"programs": []any{map[string]any{"name": program, "sha256": hex.EncodeToString(sum[:]), "provider": "alice"}},
		"inputs":   []any{map[string]any{"name": "a", "provider": "alice"}, map[string]any{"name": "b", "provider": "alice"}},
		"outputs":  []any{map[string]any{"name": "sum", "readers": []string{"dave"}}},
		"isolates": []any{map[string]any{"class": "software", "platform_keys": []string{keys.FormatSigningKey(n.PlatformKey())}}},
		"limits":   map[string]any{"memory": "16MiB", "timeout": "60s", "max_output": "4KiB"},
		"expires":  time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
	})
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func newInternalSession(t *testing.T, n *Node, program string) *internalSession {
	t.Helper()
	wasm, err := os.ReadFile(filepath.Join("testdata", program))
	if err != nil {
		t.Fatal(err)
	}
	alice, _ := keys.Generate()
	dave, _ := keys.Generate()
	s, err := n.createSession(context.Background(), &cloisterv1.CreateSessionRequest{Policy: sumPolicyDoc(t, n, program, wasm, alice, dave)}, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	return &internalSession{t: t, s: s, alice: alice, dave: dave, wasm: wasm, programName: program}
}

func (is *internalSession) sign(k *keys.PrivateKey, principal, op, name string, payload []byte) *cloisterv1.SignedRequest {
	nonce := make([]byte, 16)
	rand.Read(nonce)
	var ph [32]byte
	if payload != nil {
		ph = sha256.Sum256(payload)
	}
	ms := time.Now().UnixMilli()
	return &cloisterv1.SignedRequest{Principal: principal, UnixMs: ms, Nonce: nonce, Signature: k.Sign(protocol.RequestMessage(is.s.id, op, name, ph, is.s.hash, ms, nonce))}
}

func (is *internalSession) upload(program bool, name string, data []byte) {
	is.t.Helper()
	hpub, err := seal.ParsePublicKey(is.s.core.hpkePub)
	if err != nil {
		is.t.Fatal(err)
	}
	kind, op := protocol.KindInput, protocol.OpUploadInput
	if program {
		kind, op = protocol.KindProgram, protocol.OpUploadProgram
	}
	env, err := seal.Seal(hpub, data, protocol.SealInfo(kind, is.s.id, name, ""), protocol.SealAAD(is.s.hash))
	if err != nil {
		is.t.Fatal(err)
	}
	if _, err := is.s.upload(context.Background(), program, &cloisterv1.UploadRequest{SessionId: is.s.id, Name: name, Envelope: env, Auth: is.sign(is.alice, "alice", op, name, env)}); err != nil {
		is.t.Fatalf("upload %s: %v", name, err)
	}
}

func (is *internalSession) provision() {
	is.upload(true, is.programName, is.wasm)
	is.upload(false, "a", []byte("hello"))
	is.upload(false, "b", []byte("world"))
}

func (is *internalSession) wait() {
	is.t.Helper()
	select {
	case <-is.s.done:
	case <-time.After(2 * time.Minute):
		is.t.Fatal("run did not end")
	}
}

func (is *internalSession) result() ([]byte, error) {
	resp, err := is.s.result(context.Background(), &cloisterv1.GetResultRequest{SessionId: is.s.id, Output: "sum", Auth: is.sign(is.dave, "dave", protocol.OpGetResult, "sum", nil)})
	if err != nil {
		return nil, err
	}
	return is.dave.Open(resp.Envelope, protocol.SealInfo(protocol.KindOutput, is.s.id, "sum", "dave"), protocol.SealAAD(is.s.hash))
}

func TestEventsRecordedAfterCommit(t *testing.T) {
	dir := t.TempDir()
	pk, _, err := keys.LoadOrCreate(filepath.Join(dir, PlatformKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	skey, _ := deriveStorageKey(pk.Signer().Seed())
	reader, err := openStore(filepath.Join(dir, "sessions"), skey, false)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.close()
	log := &committedLog{t: t, dir: dir, st: reader}
	n := newInternalNode(t, dir, log)
	is := newInternalSession(t, n, "sum.wasm")
	is.provision()
	is.wait()
	if got, err := is.result(); err != nil || string(got) != "1084\n" {
		t.Fatalf("result %q, %v", got, err)
	}
	if _, err := is.s.close(context.Background(), &cloisterv1.CloseSessionRequest{SessionId: is.s.id, Auth: is.sign(is.dave, "dave", protocol.OpClose, "", nil)}); err != nil {
		t.Fatal(err)
	}
	if !n.WaitLedger(10 * time.Second) {
		t.Fatal("ledger entries still pending after 10 s")
	}
	want := []string{EventSessionCreated, EventProgramUploaded, EventInputUploaded, EventInputUploaded, EventRunFinished, EventResultFetched, EventSessionClosed}
	log.mu.Lock()
	defer log.mu.Unlock()
	if fmt.Sprint(log.kinds) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", log.kinds, want)
	}
}

// A result whose run ended but could not be stored is never served: the
// session reports why, and the next start runs it again from the state on
// disk, which still says running.
func TestUnstoredResultIsNotServed(t *testing.T) {
	dir := t.TempDir()
	n := newInternalNode(t, dir, nil)
	is := newInternalSession(t, n, "spin.wasm")
	is.provision()
	// While it runs, make the log impossible to append to (a directory in
	// its place: refused even to root).
	logPath := n.store.logPath(is.s.id)
	if err := os.Rename(logPath, logPath+".saved"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(logPath, 0o700); err != nil {
		t.Fatal(err)
	}
	// The store keeps the log open between appends: close it, so that the
	// next append has to open the path.
	n.store.dropFile(is.s.id)
	is.wait()
	st := is.s.status()
	if st.State != cloisterv1.SessionState_SESSION_STATE_FAILED || !strings.Contains(st.Reason, "could not be stored") {
		t.Fatalf("state %v (%s), want failed because the outcome was not stored", st.State, st.Reason)
	}
	if _, err := is.result(); err == nil {
		t.Fatal("served a result that is not on disk")
	}
	n.Close()
	os.Remove(logPath)
	if err := os.Rename(logPath+".saved", logPath); err != nil {
		t.Fatal(err)
	}
	n2 := newInternalNode(t, dir, nil)
	s2 := n2.session(is.s.id)
	if s2 == nil {
		t.Fatal("session not restored")
	}
	is.s = s2
	is.wait()
	got, err := is.result()
	if err != nil {
		t.Fatalf("after the restart: %v (%s)", err, s2.status().Reason)
	}
	var x uint32
	for i := uint32(0); i < 1000000000; i++ {
		x += i
	}
	if want := fmt.Sprintf("%d\n", x); string(got) != want {
		t.Fatalf("sum = %q, want %q", got, want)
	}
}

// numberedLog is a NumberedEventLog that can be down, or record an entry
// and then fail as if its answer were lost.
type numberedLog struct {
	mu       sync.Mutex
	mode     string // "up", "down" (records nothing), "lossy" (records, then fails)
	byNumber map[uint64]string
	order    []string // "session event" per recorded entry
	already  int      // ErrAlreadyRecorded answers given
	failOnce map[string]bool
	taken    map[uint64]bool // numbers held by other entries
}

func (l *numberedLog) Record(ctx context.Context, kind string, body any) (uint64, error) {
	return 0, errors.New("numberedLog: the node must use RecordNumbered")
}

func (l *numberedLog) RecordNumbered(ctx context.Context, kind string, body json.RawMessage, number uint64) (uint64, error) {
	var b map[string]any
	if err := json.Unmarshal(body, &b); err != nil {
		return 0, err
	}
	name := fmt.Sprintf("%.8s %s", b["session"], eventOf(kind, b))
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mode == "down" {
		return 0, errors.New("numberedLog: down")
	}
	if l.taken[number] {
		return 0, ErrNumberTaken
	}
	if ev := eventOf(kind, b); l.failOnce[ev] {
		delete(l.failOnce, ev)
		return 0, errors.New("numberedLog: " + ev + " failed once")
	}
	if _, ok := l.byNumber[number]; ok {
		l.already++
		return 0, ErrAlreadyRecorded
	}
	l.byNumber[number] = name
	l.order = append(l.order, name)
	if l.mode == "lossy" {
		return 0, errors.New("numberedLog: recorded, but the answer was lost")
	}
	return uint64(len(l.order)), nil
}

func (l *numberedLog) set(mode string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mode = mode
}

// TestEntriesRecordedAfterRestart: entries of committed steps that the log
// did not confirm before the node stopped — because it was down, or its
// answer was lost — are recorded at the next start, each exactly once, in
// step order; a closed session's come from its tombstone, and once they
// are all on the log a later start does not send them again.
func TestEntriesRecordedAfterRestart(t *testing.T) {
	dir := t.TempDir()
	log := &numberedLog{mode: "lossy", byNumber: map[uint64]string{}}
	n := newInternalNode(t, dir, log)
	live := newInternalSession(t, n, "sum.wasm")
	closed := newInternalSession(t, n, "sum.wasm")
	if !n.WaitLedger(10 * time.Second) {
		t.Fatal("entries still pending")
	}
	log.set("down")
	live.provision()
	live.wait()
	if got, err := live.result(); err != nil || string(got) != "1084\n" {
		t.Fatalf("result %q, %v", got, err)
	}
	closed.upload(true, closed.programName, closed.wasm)
	if _, err := closed.s.close(context.Background(), &cloisterv1.CloseSessionRequest{SessionId: closed.s.id, Auth: closed.sign(closed.dave, "dave", protocol.OpClose, "", nil)}); err != nil {
		t.Fatal(err)
	}
	if !n.WaitLedger(10 * time.Second) {
		t.Fatal("entries still pending")
	}
	n.Close()
	if len(log.order) != 2 {
		t.Fatalf("before the restart the log holds %v, want the two creations", log.order)
	}
	// Someone who can write the data directory but not read the platform
	// key adds a tombstone whose entries the node would sign: it is not
	// replayed (its entries do not open), nor are plaintext ones.
	forged := `{"id":"0123456789abcdef0123456789abcdef","closed":"2026-01-01T00:00:00Z","by":"mallory","sealed_entries":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",` +
		`"entries":[{"kind":"note","body":{"text":"signed by the node"},"number":7}]}` + "\n"
	f, err := os.OpenFile(filepath.Join(dir, "sessions", closedLog), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(forged)
	f.Close()

	log.set("up")
	n2 := newInternalNode(t, dir, log)
	if !n2.WaitLedger(10 * time.Second) {
		t.Fatal("entries still pending after the restart")
	}
	l, c := live.s.id[:8], closed.s.id[:8]
	want := []string{
		l + " " + EventSessionCreated, c + " " + EventSessionCreated,
		l + " " + EventProgramUploaded, l + " " + EventInputUploaded, l + " " + EventInputUploaded, l + " " + EventRunFinished, l + " " + EventResultFetched,
		c + " " + EventProgramUploaded, c + " " + EventSessionClosed,
	}
	log.mu.Lock()
	got := slices.Clone(log.order)
	already := log.already
	log.mu.Unlock()
	// The two sessions replay concurrently: compare each one's order.
	for _, id := range []string{l, c} {
		var g, w []string
		for _, e := range got {
			if strings.HasPrefix(e, id) {
				g = append(g, e)
			}
		}
		for _, e := range want {
			if strings.HasPrefix(e, id) {
				w = append(w, e)
			}
		}
		if !slices.Equal(g, w) {
			t.Errorf("session %s on the log: %v, want %v", id, g, w)
		}
	}
	if already != 2 {
		t.Errorf("%d entries found already recorded, want the 2 creations whose answers were lost", already)
	}
	for _, e := range got {
		if strings.HasPrefix(e, "01234567") || strings.Contains(e, "note") {
			t.Errorf("replayed a forged tombstone's entry: %s", e)
		}
	}
	n2.Close()

	// A third start sends nothing: the closed session's entries are noted
	// as recorded, and the finished session was saved once its were all
	// confirmed.
	n3 := newInternalNode(t, dir, log)
	if !n3.WaitLedger(10 * time.Second) {
		t.Fatal("entries still pending after the second restart")
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.order) != len(got) {
		t.Errorf("the third start recorded %v again", log.order[len(got):])
	}
	if log.already != already {
		t.Errorf("the third start sent %d entries again", log.already-already)
	}
}

// TestLedgerRefusesARecordedEntryAgain: on a real ledger an entry sent
// again under its number (signed anew, at a later time) is refused as a
// replay, which the node reads as already recorded.
func TestLedgerRefusesARecordedEntryAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	e := OpenTestLedger(t)
	rt, err := isolate.New(ctx, isolate.Options{InProcess: true, InProcessNoCancel: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	n, err := New(ctx, Options{DataDir: filepath.Join(tmp, "node"), Runner: rt, NoSync: true, Ledger: e, LedgerName: ledger.Origin(e.ChainID()),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	is := newInternalSession(t, n, "sum.wasm")
	is.s.mu.Lock()
	staged := is.s.rec.Events[0].Entry
	is.s.mu.Unlock()
	if staged == nil || staged.Number == 0 {
		t.Fatalf("session.created staged as %+v, want a numbered entry", staged)
	}
	if !n.WaitLedger(30 * time.Second) {
		t.Fatal("entries still pending")
	}
	is.s.mu.Lock()
	idx, left := is.s.rec.Events[0].LedgerIndex, is.s.rec.Events[0].Entry
	is.s.mu.Unlock()
	if idx == 0 || left != nil {
		t.Fatalf("after recording: index %d, entry still staged: %v", idx, left != nil)
	}
	if got, err := n.recordEntry(is.s.id, staged); !errors.Is(err, ErrAlreadyRecorded) || got != idx {
		t.Fatalf("sending the entry again: index %d, %v; want ErrAlreadyRecorded and its index %d", got, err, idx)
	}
	// Another entry under the same number (numbers reused) is told apart.
	other := *staged
	other.Body = json.RawMessage(strings.Replace(string(staged.Body), `"session.created"`, `"session.closed"`, 1))
	if _, err := n.events.(NumberedEventLog).RecordNumbered(ctx, other.Kind, other.Body, other.Number); !errors.Is(err, ErrNumberTaken) {
		t.Fatalf("another entry under a used number: %v, want ErrNumberTaken", err)
	}
}

// TestEntriesKeepStepOrder: once an entry is left to the next start, the
// session's later entries wait for it, so that the log holds them in the
// order of the steps.
func TestEntriesKeepStepOrder(t *testing.T) {
	dir := t.TempDir()
	log := &numberedLog{mode: "up", byNumber: map[uint64]string{}, failOnce: map[string]bool{EventProgramUploaded: true}}
	n := newInternalNode(t, dir, log)
	is := newInternalSession(t, n, "sum.wasm")
	is.provision()
	is.wait()
	if !n.WaitLedger(10 * time.Second) {
		t.Fatal("entries still pending")
	}
	id := is.s.id[:8]
	log.mu.Lock()
	before := slices.Clone(log.order)
	log.mu.Unlock()
	if want := []string{id + " " + EventSessionCreated}; !slices.Equal(before, want) {
		t.Fatalf("before the restart: %v, want %v (nothing after the entry that failed)", before, want)
	}
	n.Close()
	n2 := newInternalNode(t, dir, log)
	if !n2.WaitLedger(10 * time.Second) {
		t.Fatal("entries still pending after the restart")
	}
	want := []string{id + " " + EventSessionCreated, id + " " + EventProgramUploaded, id + " " + EventInputUploaded, id + " " + EventInputUploaded, id + " " + EventRunFinished}
	log.mu.Lock()
	defer log.mu.Unlock()
	if !slices.Equal(log.order, want) {
		t.Fatalf("after the restart: %v, want %v", log.order, want)
	}
}

// TestRestartedRunReplaysEntries: a run cut short by a stop while its
// entries were unconfirmed is run again, and those entries, then the
// interruption's and the restart's, are sent in order (under -race: without a race between the
// recorder and the restart's own step).
func TestRestartedRunReplaysEntries(t *testing.T) {
	dir := t.TempDir()
	log := &numberedLog{mode: "down", byNumber: map[uint64]string{}}
	n := newInternalNode(t, dir, log)
	is := newInternalSession(t, n, "spin.wasm")
	is.provision()
	if !n.WaitLedger(10 * time.Second) {
		t.Fatal("entries still pending")
	}
	n.Close() // the run is cut short
	log.set("up")
	n2 := newInternalNode(t, dir, log)
	if !n2.WaitLedger(10 * time.Second) {
		t.Fatal("entries still pending after the restart")
	}
	id := is.s.id[:8]
	want := []string{id + " " + EventSessionCreated, id + " " + EventProgramUploaded, id + " " + EventInputUploaded, id + " " + EventInputUploaded, id + " " + EventRunInterrupted, id + " " + EventRunRestarted}
	log.mu.Lock()
	got := slices.Clone(log.order)
	log.mu.Unlock()
	if !slices.Equal(got, want) {
		t.Fatalf("after the restart: %v, want %v", got, want)
	}
	n2.Close()
}

// TestEntryRenumberedWhenNumberTaken: an entry whose number the log holds
// for a different entry (numbers reused) is sent again under a new number,
// and the new number is what the session's state keeps.
func TestEntryRenumberedWhenNumberTaken(t *testing.T) {
	dir := t.TempDir()
	log := &numberedLog{mode: "up", byNumber: map[uint64]string{}, taken: map[uint64]bool{}}
	n := newInternalNode(t, dir, log)
	// The next number the node hands out is taken on the log.
	n.numbers.mu.Lock()
	log.taken[n.numbers.next] = true
	first := n.numbers.next
	n.numbers.mu.Unlock()
	is := newInternalSession(t, n, "sum.wasm")
	if !n.WaitLedger(10 * time.Second) {
		t.Fatal("entries still pending")
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if want := []string{is.s.id[:8] + " " + EventSessionCreated}; !slices.Equal(log.order, want) {
		t.Fatalf("log holds %v, want %v", log.order, want)
	}
	for num := range log.byNumber {
		if num == first {
			t.Errorf("recorded under the taken number %d", num)
		}
	}
	is.s.mu.Lock()
	defer is.s.mu.Unlock()
	if ev := is.s.rec.Events[0]; ev.LedgerIndex == 0 || ev.Entry != nil {
		t.Errorf("after renumbering: index %d, still staged %v", ev.LedgerIndex, ev.Entry != nil)
	}
}
