package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/isolate"
)

func testStore(t *testing.T, dir string, sync bool) *store {
	t.Helper()
	st, err := openStore(dir, bytes.Repeat([]byte{7}, 32), sync)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.close() })
	return st
}

const testID = "00112233445566778899aabbccddeeff"

func testRecord(state string, inline int) *record {
	return &record{Version: stateVersion, ID: testID, State: state, Created: time.Unix(1700000000, 0).UTC(),
		Programs: map[string]*slotRecord{"p": {Principal: "alice", Inline: bytes.Repeat([]byte{1}, inline)}},
		Inputs:   map[string]*slotRecord{}, Outputs: map[string]*outputRecord{}}
}

// A crash during an append leaves a torn last frame: the state is the frame
// before it, the torn bytes are cut off, and later saves append after the
// last complete frame.
func TestStoreTornFrameIsCutOff(t *testing.T) {
	dir := t.TempDir()
	st := testStore(t, dir, true)
	for i, state := range []string{stateProvisioning, stateProvisioning, stateRunning} {
		rec := testRecord(state, 100)
		rec.Restarted = i
		if err := st.save(rec, true); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, testID+logSuffix)
	good, _ := os.ReadFile(path)
	next, err := st.sealFrame(new(frameBuffers), testRecord(stateFinished, 100), 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{1, logHeader - 1, logHeader, logHeader + 20, len(next) - 1} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			if err := os.WriteFile(path, append(bytes.Clone(good), next[:cut]...), 0o600); err != nil {
				t.Fatal(err)
			}
			st2 := testStore(t, dir, true)
			rec, err := st2.load(testID)
			if err != nil {
				t.Fatal(err)
			}
			if rec.State != stateRunning || rec.Restarted != 2 {
				t.Fatalf("loaded state %q restarted %d, want the third frame (running, 2)", rec.State, rec.Restarted)
			}
			if fi, _ := os.Stat(path); fi.Size() != int64(len(good)) {
				t.Fatalf("log is %d bytes after load, want the torn frame cut off (%d)", fi.Size(), len(good))
			}
			if err := st2.save(testRecord(stateFinished, 100), true); err != nil {
				t.Fatal(err)
			}
			rec, err = testStore(t, dir, true).load(testID)
			if err != nil || rec.State != stateFinished {
				t.Fatalf("after a save past the cut: %v %v", rec, err)
			}
		})
	}
}

// A frame from another place in the log (replayed, reordered) or sealed
// for another session ends the log; the frames before it stand.
func TestStoreFramesAreBoundToSessionAndPlace(t *testing.T) {
	dir := t.TempDir()
	st := testStore(t, dir, false)
	if err := st.save(testRecord(stateProvisioning, 10), true); err != nil {
		t.Fatal(err)
	}
	if err := st.save(testRecord(stateRunning, 10), true); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, testID+logSuffix)
	data, _ := os.ReadFile(path)
	f1, _ := st.sealFrame(new(frameBuffers), testRecord(stateProvisioning, 10), 1)
	f3, _ := st.sealFrame(new(frameBuffers), testRecord(stateFinished, 10), 3)
	other := testRecord(stateFinished, 10)
	other.ID = "ffeeddccbbaa99887766554433221100"
	f3other, _ := st.sealFrame(new(frameBuffers), other, 3)
	f3v1 := bytes.Clone(f3)
	f3v1[len(logMagic)] = logVersionV1
	for name, tail := range map[string][]byte{"replayed first frame": f1, "another session's frame": f3other, "a frame whose version byte was changed": f3v1} {
		if err := os.WriteFile(path, append(bytes.Clone(data), tail...), 0o600); err != nil {
			t.Fatal(err)
		}
		rec, err := testStore(t, dir, false).load(testID)
		if err != nil || rec.State != stateRunning {
			t.Fatalf("%s appended: %v %v, want the second frame (running)", name, rec, err)
		}
	}
	if err := os.WriteFile(path, append(bytes.Clone(data), f3...), 0o600); err != nil {
		t.Fatal(err)
	}
	if rec, err := testStore(t, dir, false).load(testID); err != nil || rec.State != stateFinished {
		t.Fatalf("the next frame appended: %v %v, want finished", rec, err)
	}
}

// The log is rewritten when it grows past a few records, so its size
// follows the record, not the number of steps.
func TestStoreCompacts(t *testing.T) {
	dir := t.TempDir()
	st := testStore(t, dir, false)
	var frame int
	for i := range 200 {
		rec := testRecord(stateProvisioning, 60<<10)
		rec.Restarted = i
		if err := st.save(rec, i%2 == 0); err != nil {
			t.Fatal(err)
		}
		f, _ := st.sealFrame(new(frameBuffers), rec, 1)
		frame = len(f)
	}
	fi, err := os.Stat(filepath.Join(dir, testID+logSuffix))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > compactAt(frame) {
		t.Fatalf("log is %d bytes after 200 saves of a %d-byte frame, want at most %d", fi.Size(), frame, compactAt(frame))
	}
	rec, err := testStore(t, dir, false).load(testID)
	if err != nil || rec.Restarted != 199 {
		t.Fatalf("after compaction: %v %v, want the last record", rec, err)
	}
}

// Sessions stored by earlier versions (state.sealed) load, and move to
// state.log at their next step.
func TestStoreReadsLegacyState(t *testing.T) {
	dir := t.TempDir()
	st := testStore(t, dir, true)
	plain, _ := json.Marshal(testRecord(stateFinished, 10))
	nonce := make([]byte, st.aead.NonceSize())
	legacy := st.aead.Seal(append([]byte(legacyMagic+"\x01"), nonce...), nonce, plain, stateAAD(testID))
	os.MkdirAll(filepath.Join(dir, testID), 0o700)
	if err := os.WriteFile(filepath.Join(dir, testID, legacyFile), legacy, 0o600); err != nil {
		t.Fatal(err)
	}
	// An empty state.log (a crash while moving it) does not hide it.
	if err := os.WriteFile(filepath.Join(dir, testID, logFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rec, err := st.load(testID)
	if err != nil || rec.State != stateFinished {
		t.Fatalf("legacy state: %v %v", rec, err)
	}
	rec.Reason = "moved"
	if err := st.save(rec, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, testID, legacyFile)); !os.IsNotExist(err) {
		t.Fatalf("state.sealed still there after the move: %v", err)
	}
	if rec, err := testStore(t, dir, true).load(testID); err != nil || rec.Reason != "moved" {
		t.Fatalf("after the move: %v %v", rec, err)
	}
}

// Many closes at once share fsyncs and every tombstone is kept; a torn
// last line is cut off at the next open.
func TestClosedLogGroupCommit(t *testing.T) {
	dir := t.TempDir()
	l, err := openAppendLog(filepath.Join(dir, closedLog), true)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.append(fmt.Appendf(nil, `{"id":"%032x","by":"p%d"}`+"\n", i, i)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	lines, err := l.readAll()
	if err != nil || len(lines) != 64 {
		t.Fatalf("%d lines, %v; want 64", len(lines), err)
	}
	l.close()
	f, _ := os.OpenFile(filepath.Join(dir, closedLog), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"id":"torn`)
	f.Close()
	l, err = openAppendLog(filepath.Join(dir, closedLog), true)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	if err := l.append([]byte(`{"id":"after"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	lines, _ = l.readAll()
	if len(lines) != 65 || string(lines[64]) != `{"id":"after"}` {
		t.Fatalf("after a torn line: %d lines, last %q", len(lines), lines[len(lines)-1])
	}
}

// A node that stopped in the middle of creating a session (no complete
// frame) or of closing one (tombstone written, files not yet gone) starts
// with neither half-served: the first is removed, the second erased.
func TestNodeStartFinishesInterruptedCreateAndClose(t *testing.T) {
	dir := t.TempDir()
	rt, err := isolate.New(context.Background(), isolate.Options{InProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	open := func() *Node {
		n, err := New(context.Background(), Options{DataDir: dir, Runner: rt, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := open()
	n.Close()
	sessions := filepath.Join(dir, "sessions")
	half := "0123456789abcdef0123456789abcdef"
	os.MkdirAll(filepath.Join(sessions, half), 0o700)
	os.WriteFile(filepath.Join(sessions, half, logFile), []byte(logMagic+"\x01\x00\x00"), 0o600)
	closing := "fedcba9876543210fedcba9876543210"
	os.MkdirAll(filepath.Join(sessions, closing), 0o700)
	os.WriteFile(filepath.Join(sessions, closing, logFile), []byte("sealed state"), 0o600)
	ts, _ := json.Marshal(tombstone{ID: closing, Closed: time.Now(), By: "carol"})
	f, _ := os.OpenFile(filepath.Join(sessions, closedLog), os.O_WRONLY|os.O_APPEND, 0)
	f.Write(append(ts, '\n'))
	f.Close()

	// The same in this version's layout: <id>.log directly in sessions/.
	halfFlat := "1123456789abcdef0123456789abcdef"
	os.WriteFile(filepath.Join(sessions, halfFlat+logSuffix), []byte(logMagic+"\x02\x00"), 0o600)
	closingFlat := "ffcba9876543210fedcba9876543210f"
	os.WriteFile(filepath.Join(sessions, closingFlat+logSuffix), []byte("sealed state"), 0o600)
	ts, _ = json.Marshal(tombstone{ID: closingFlat, Closed: time.Now(), By: "carol"})
	f, _ = os.OpenFile(filepath.Join(sessions, closedLog), os.O_WRONLY|os.O_APPEND, 0)
	f.Write(append(ts, '\n'))
	f.Close()
	// And a compaction cut short, in both layouts.
	os.WriteFile(filepath.Join(sessions, ".tmp-123"), []byte("sealed"), 0o600)
	oldDir := filepath.Join(sessions, "2123456789abcdef0123456789abcdef")
	os.MkdirAll(oldDir, 0o700)
	os.WriteFile(filepath.Join(oldDir, ".tmp-456"), []byte("sealed"), 0o600)

	n = open()
	defer n.Close()
	for _, tmp := range []string{filepath.Join(sessions, ".tmp-123"), filepath.Join(oldDir, ".tmp-456")} {
		if _, err := os.Stat(tmp); !os.IsNotExist(err) {
			t.Errorf("a compaction's temporary file still there after start: %v", err)
		}
	}
	for _, id := range []string{half, closing, halfFlat, closingFlat} {
		if _, err := os.Stat(filepath.Join(sessions, id)); !os.IsNotExist(err) {
			t.Errorf("session %s still on disk after start: %v", id, err)
		}
		if _, err := os.Stat(filepath.Join(sessions, id+logSuffix)); !os.IsNotExist(err) {
			t.Errorf("session %s's log still on disk after start: %v", id, err)
		}
		if n.session(id) != nil {
			t.Errorf("session %s served after start", id)
		}
	}
	if got, ok := n.closed.get(closing); !ok || got.By != "carol" {
		t.Errorf("closed session's tombstone: %+v %v", got, ok)
	}
	if n.closed.has(half) {
		t.Errorf("a session never created is reported closed")
	}
	if !strings.Contains(string(must(os.ReadFile(filepath.Join(sessions, closedLog)))), closing) {
		t.Error("tombstone lost")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// BenchmarkStoreSave appends one step of a session whose record holds a
// 31 KiB program and two small inputs inline (the bench/session flow),
// without fsync: the CPU a step costs the node besides the disk.
func BenchmarkStoreSave(b *testing.B) {
	st, err := openStore(b.TempDir(), bytes.Repeat([]byte{7}, 32), false)
	if err != nil {
		b.Fatal(err)
	}
	defer st.close()
	rec := testRecord(stateProvisioning, 31<<10)
	rec.Policy = bytes.Repeat([]byte("{}"), 3000)
	rec.Keys = coreKeys{TLSKey: make([]byte, 138), Cert: make([]byte, 700), HPKEKey: make([]byte, 34)}
	rec.Inputs["a"] = &slotRecord{Principal: "bob", Inline: make([]byte, 1200), Signature: make([]byte, 64)}
	rec.Inputs["b"] = &slotRecord{Principal: "carol", Inline: make([]byte, 1200), Signature: make([]byte, 64)}
	for range 4 {
		rec.Events = append(rec.Events, eventRecord{Kind: EventInputUploaded, Principal: "bob", Name: "a", Time: time.Now()})
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := st.save(rec, false); err != nil {
			b.Fatal(err)
		}
	}
}

// Envelopes of a session with a log are appended to it once, survive a
// restart, and a compaction keeps the ones the record names and drops the
// rest; the record frames stay small whatever the envelopes weigh.
func TestStoreEnvelopesInLog(t *testing.T) {
	dir := t.TempDir()
	st := testStore(t, dir, true)
	rec := testRecord(stateProvisioning, 0)
	rec.Programs = map[string]*slotRecord{}
	if err := st.save(rec, true); err != nil {
		t.Fatal(err)
	}
	prog := bytes.Repeat([]byte("program "), 4<<10)
	sha, inline, err := st.putEnvelope(testID, prog)
	if err != nil || inline != nil {
		t.Fatalf("putEnvelope: inline %d bytes, %v; want it in the log", len(inline), err)
	}
	dropped, _, err := st.putEnvelope(testID, []byte("an upload whose record save failed"))
	if err != nil {
		t.Fatal(err)
	}
	rec.Programs["p"] = &slotRecord{Principal: "alice", EnvelopeSHA256: sha}
	if err := st.save(rec, true); err != nil {
		t.Fatal(err)
	}
	recFrame, _ := st.sealFrame(new(frameBuffers), rec, 1)
	if len(recFrame) > 2<<10 {
		t.Errorf("a record frame is %d bytes: the envelope went into it", len(recFrame))
	}

	st2 := testStore(t, dir, true)
	got, err := st2.load(testID)
	if err != nil {
		t.Fatal(err)
	}
	env, err := st2.getEnvelope(testID, got.Programs["p"].EnvelopeSHA256, got.Programs["p"].Inline)
	if err != nil || !bytes.Equal(env, prog) {
		t.Fatalf("envelope after restart: %d bytes, %v", len(env), err)
	}
	// Force a compaction: everything but the named envelope goes.
	st2.mu.Lock()
	st2.logs[testID].size = compactAt(len(recFrame)) + st2.logs[testID].envBytes + 1
	st2.mu.Unlock()
	got.State = stateRunning
	if err := st2.save(got, true); err != nil {
		t.Fatal(err)
	}
	st3 := testStore(t, dir, true)
	got, err = st3.load(testID)
	if err != nil || got.State != stateRunning {
		t.Fatalf("after compaction: %v %v", got, err)
	}
	if env, err := st3.getEnvelope(testID, sha, nil); err != nil || !bytes.Equal(env, prog) {
		t.Fatalf("named envelope after compaction: %d bytes, %v", len(env), err)
	}
	if _, err := st3.getEnvelope(testID, dropped, nil); err == nil {
		t.Errorf("an envelope no record names survived compaction")
	}
	if fi, _ := os.Stat(filepath.Join(dir, testID+logSuffix)); fi.Size() > int64(len(prog))+4<<10 {
		t.Errorf("compacted log is %d bytes for a %d-byte envelope", fi.Size(), len(prog))
	}
}

// Logs written before envelope frames (version 1: every frame a record,
// small envelopes inline) are still read, and the next save continues them.
func TestStoreReadsVersion1Logs(t *testing.T) {
	dir := t.TempDir()
	st := testStore(t, dir, true)
	v1 := func(rec *record, seq uint64) []byte {
		buf := new(frameBuffers)
		if err := json.NewEncoder(&buf.plain).Encode(rec); err != nil {
			t.Fatal(err)
		}
		f, err := st.sealPlainVersion(buf, rec.ID, seq, logVersionV1)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	old := testRecord(stateRunning, 300)
	if err := os.MkdirAll(filepath.Join(dir, testID), 0o700); err != nil {
		t.Fatal(err)
	}
	data := append(v1(testRecord(stateProvisioning, 300), 1), v1(old, 2)...)
	if err := os.WriteFile(filepath.Join(dir, testID, logFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := st.load(testID)
	if err != nil || got.State != stateRunning || len(got.Programs["p"].Inline) != 300 {
		t.Fatalf("version-1 log: %+v %v", got, err)
	}
	got.State = stateFinished
	if err := st.save(got, true); err != nil {
		t.Fatal(err)
	}
	if got, err = testStore(t, dir, true).load(testID); err != nil || got.State != stateFinished {
		t.Fatalf("after a save on a version-1 log: %v %v", got, err)
	}
	// It stays where an earlier version put it (<id>/state.log), and
	// erasing the session removes it there.
	if _, err := os.Stat(filepath.Join(dir, testID+logSuffix)); !os.IsNotExist(err) {
		t.Fatalf("a log of the earlier layout was moved: %v", err)
	}
	if err := st.erase(testID, tombstone{ID: testID, By: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, testID)); !os.IsNotExist(err) {
		t.Fatalf("session directory after erase: %v", err)
	}
}

// Envelopes do not count towards compaction: a session holding megabytes
// of them is not rewritten at every step, only when records pile up.
func TestStoreEnvelopesDoNotTriggerCompaction(t *testing.T) {
	dir := t.TempDir()
	st := testStore(t, dir, false)
	rec := testRecord(stateProvisioning, 0)
	rec.Programs = map[string]*slotRecord{}
	if err := st.save(rec, true); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		sha, _, err := st.putEnvelope(testID, bytes.Repeat([]byte{byte(i)}, 60<<10))
		if err != nil {
			t.Fatal(err)
		}
		rec.Inputs[fmt.Sprint(i)] = &slotRecord{Principal: "bob", EnvelopeSHA256: sha}
	}
	path := filepath.Join(dir, testID+logSuffix)
	inode := func() uint64 {
		var s syscall.Stat_t
		if err := syscall.Stat(path, &s); err != nil {
			t.Fatal(err)
		}
		return s.Ino
	}
	before := inode()
	for i := range 10 {
		rec.Restarted = i
		if err := st.save(rec, false); err != nil {
			t.Fatal(err)
		}
	}
	if inode() != before {
		t.Errorf("the log was rewritten by 10 small saves of a session holding 1.2 MB of envelopes")
	}
	got, err := testStore(t, dir, false).load(testID)
	if err != nil || got.Restarted != 9 || len(got.Inputs) != 20 {
		t.Fatalf("after the saves: %v %v", got, err)
	}
}

// Logs stay open between appends, up to maxOpenLogs of them; a session
// past the bound still saves (opening its log each time), and an erased
// session's log is closed.
func TestStoreOpenLogsAreBounded(t *testing.T) {
	dir := t.TempDir()
	st := testStore(t, dir, false)
	ids := make([]string, maxOpenLogs+3)
	for i := range ids {
		ids[i] = fmt.Sprintf("%032x", i+1)
		for step := range 2 {
			rec := testRecord(stateProvisioning, 10)
			rec.ID, rec.Restarted = ids[i], step
			if err := st.save(rec, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := len(st.files); n != maxOpenLogs {
		t.Fatalf("%d logs open, want %d", n, maxOpenLogs)
	}
	for _, id := range []string{ids[0], ids[len(ids)-1]} {
		if rec, err := testStore(t, dir, false).load(id); err != nil || rec.Restarted != 1 {
			t.Fatalf("session %s: %+v %v, want its second record", id, rec, err)
		}
	}
	if err := st.erase(ids[0], tombstone{ID: ids[0], By: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, open := st.files[ids[0]]; open || len(st.files) != maxOpenLogs-1 {
		t.Fatalf("erased session's log still open (%d open)", len(st.files))
	}
	st.close()
	if len(st.files) != 0 {
		t.Fatalf("%d logs open after close", len(st.files))
	}
}

// The closed sessions a node remembers are bounded, in memory and in its
// log of closed sessions: past maxClosedKept the oldest are forgotten and
// the log is rewritten at the next start or sweep, except the closes
// whose ledger entries are still to be replayed.
func TestClosedSessionsAreBounded(t *testing.T) {
	dir := t.TempDir()
	sessions := filepath.Join(dir, "sessions")
	st := testStore(t, sessions, false)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	total := 2*maxClosedKept + 100
	id := func(i int) string { return fmt.Sprintf("%032x", i+1) }
	// The oldest close of all left an entry unconfirmed.
	pending := id(total)
	if err := st.erase(pending, tombstone{ID: pending, Closed: base.Add(-time.Hour), By: "p",
		Entries: []stagedEntry{{Kind: EventSessionClosed, Body: json.RawMessage(`{}`)}}}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for i := range total {
		line, _ := json.Marshal(tombstone{ID: id(i), Closed: base.Add(time.Duration(i) * time.Second), By: "p"})
		buf.Write(append(line, '\n'))
		if i%7 == 0 { // a Recorded line for a close without entries
			line, _ = json.Marshal(tombstone{ID: id(i), Recorded: true})
			buf.Write(append(line, '\n'))
		}
	}
	for _, l := range bytes.Split(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), []byte("\n")) {
		if err := st.closed.appendLazy(append(l, '\n')); err != nil {
			t.Fatal(err)
		}
	}
	st.close()

	rt, err := isolate.New(context.Background(), isolate.Options{InProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	n, err := New(context.Background(), Options{DataDir: dir, Runner: rt, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.closed.len() != maxClosedKept {
		t.Fatalf("%d closed sessions remembered after start, want %d", n.closed.len(), maxClosedKept)
	}
	newest, oldest := id(total-1), id(0)
	if !n.closed.has(newest) {
		t.Errorf("the newest close forgotten")
	}
	if n.closed.has(oldest) {
		t.Errorf("the oldest close remembered")
	}
	if ts, _ := n.closed.get(newest); ts.By != "p" || !ts.Closed.Equal(base.Add(time.Duration(total-1)*time.Second)) {
		t.Errorf("the newest close remembered as %+v", ts)
	}
	lines, err := n.store.closed.readAll()
	if err != nil {
		t.Fatal(err)
	}
	if want := maxClosedKept + 1; len(lines) != want {
		t.Errorf("log of closed sessions has %d lines after start, want %d (those remembered, and the one to replay)", len(lines), want)
	}
	if !bytes.Contains(bytes.Join(lines, nil), []byte(pending)) {
		t.Errorf("a close whose entries are not yet on the ledger was dropped from the log")
	}
	// Closes while the node runs: the memory stays bounded, the newest
	// are kept, and a sweep compacts the log again once it doubled.
	for i := range maxClosedKept + maxClosedKept/8 + 1 {
		n.forget(id(total+1+i), tombstone{ID: id(total + 1 + i), Closed: base.Add(time.Duration(total+i) * time.Second), By: "q"})
	}
	if n.closed.len() > maxClosedKept+maxClosedKept/8 {
		t.Fatalf("%d closed sessions remembered while running, want at most %d", n.closed.len(), maxClosedKept+maxClosedKept/8)
	}
	if !n.closed.has(id(total + 1 + maxClosedKept + maxClosedKept/8)) {
		t.Errorf("the newest close forgotten while running")
	}
	for i := range 2 * maxClosedKept {
		line, _ := json.Marshal(tombstone{ID: id(total + 1 + i), Closed: base, By: "q"})
		n.store.closed.appendLazy(append(line, '\n'))
	}
	n.compactClosed(false)
	if lines, _ := n.store.closed.readAll(); len(lines) > maxClosedKept+1 {
		t.Errorf("log of closed sessions has %d lines after a sweep's compaction, want at most %d", len(lines), maxClosedKept+1)
	}
	if tmps, _ := filepath.Glob(filepath.Join(sessions, atomicfile.TempGlob)); len(tmps) > 0 {
		t.Errorf("a rewrite's temporary files left beside the log: %v", tmps)
	}
}

// waitSpares waits until st has made its spare logs.
func waitSpares(t *testing.T, st *store) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if n, filling := st.spares.Ready(); !filling && n == spareLogs {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("spare logs not made within 10 s")
		}
	}
}

// emptyLogs counts the session logs in dir that hold only zeros.
func emptyLogs(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), logSuffix) || e.Name() == closedLog {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil && bytes.Count(b, []byte{0}) == len(b) {
			n++
		}
	}
	return n
}

// A syncing store makes empty logs ahead of the sessions that take them.
// A session created in one is as durable as one whose log the create made:
// a store opened over the directory without the first being closed (a
// crash) loads it, and drops the spares nobody took, which never held
// anything. Each spare is handed out once; a create that fails gives its
// spare back; closing the store removes the spares.
func TestStoreSpareLogs(t *testing.T) {
	dir := t.TempDir()
	st, err := openStore(dir, bytes.Repeat([]byte{7}, 32), true)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := st.drawID(); err != nil || emptyLogs(t, dir) != 0 {
		t.Fatalf("before startSpares: id %q %v, %d empty logs; want a fresh id and none", id, err, emptyLogs(t, dir))
	}
	st.startSpares()
	waitSpares(t, st)
	if got := emptyLogs(t, dir); got != spareLogs {
		t.Fatalf("%d empty logs, want %d spares", got, spareLogs)
	}
	seen := map[string]bool{}
	id, err := st.drawID()
	if err != nil {
		t.Fatal(err)
	}
	seen[id] = true
	if fi, err := os.Stat(filepath.Join(dir, id+logSuffix)); err != nil || fi.Size() != spareBytes {
		t.Fatalf("the id drawn is not a spare's: %v", err)
	}
	rec := testRecord(stateProvisioning, 100)
	rec.ID = id
	if err := st.save(rec, true); err != nil {
		t.Fatal(err)
	}
	// Later steps append over the zeros.
	rec.Restarted = 1
	if err := st.save(rec, true); err != nil {
		t.Fatal(err)
	}
	st.unused(id) // after the save: nothing to give back
	waitSpares(t, st)

	failed, err := st.drawID()
	if err != nil || seen[failed] {
		t.Fatalf("second draw %q %v", failed, err)
	}
	seen[failed] = true
	st.unused(failed)
	if _, err := os.Stat(filepath.Join(dir, failed+logSuffix)); !os.IsNotExist(err) {
		t.Fatalf("the spare of a create that failed is still there: %v", err)
	}
	for range 3 * spareLogs {
		id, err := st.drawID()
		if err != nil || seen[id] {
			t.Fatalf("draw %q %v: handed out twice", id, err)
		}
		seen[id] = true
		st.unused(id)
	}
	waitSpares(t, st)

	// A crash: st is not closed.
	st2 := testStore(t, dir, true)
	if got := emptyLogs(t, dir); got != 0 {
		t.Fatalf("%d empty logs after opening, want the spares removed", got)
	}
	live, _, err := st2.list()
	if err != nil || len(live) != 1 || live[0] != rec.ID {
		t.Fatalf("stored sessions %v %v, want only %s", live, err, rec.ID)
	}
	got, err := st2.load(rec.ID)
	if err != nil || got.State != stateProvisioning || got.ID != rec.ID || got.Restarted != 1 {
		t.Fatalf("the session created in a spare: %+v %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, rec.ID+logSuffix)); err != nil || fi.Size() >= spareBytes {
		t.Fatalf("the zeros after the last frame are not cut off on load: %v %v", fi.Size(), err)
	}
	st.spares.Abandon() // the crashed store's, removed by st2's opening
	st.close()

	st2.startSpares()
	waitSpares(t, st2)
	// A first frame longer than a spare grows it.
	big, err := st2.drawID()
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, big+logSuffix)); err != nil || fi.Size() != spareBytes {
		t.Fatalf("the id drawn is not a spare's: %v", err)
	}
	brec := testRecord(stateProvisioning, 2*spareBytes)
	brec.ID = big
	if err := st2.save(brec, true); err != nil {
		t.Fatal(err)
	}
	waitSpares(t, st2)
	st2.close()
	if got := emptyLogs(t, dir); got != 0 {
		t.Fatalf("%d empty logs after close, want none", got)
	}
	if got, err := testStore(t, dir, false).load(big); err != nil || len(got.Programs["p"].Inline) != 2*spareBytes {
		t.Fatalf("a first frame longer than a spare: %v", err)
	}
}

// A store that does not sync makes no spares: a create's log is cheap.
func TestStoreNoSparesWithoutSync(t *testing.T) {
	dir := t.TempDir()
	st := testStore(t, dir, false)
	st.startSpares()
	st.refill()
	if _, err := st.drawID(); err != nil {
		t.Fatal(err)
	}
	_, filling := st.spares.Ready()
	if got := emptyLogs(t, dir); filling || got != 0 {
		t.Fatalf("filling %v, %d empty logs; want no spares", filling, got)
	}
}
