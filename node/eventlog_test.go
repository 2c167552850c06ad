package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/node"
)

// memoryLog is an append-only in-memory EventLog: the smallest real
// implementation of the seam the ledger plugs into.
type memoryLog struct {
	mu      sync.Mutex
	entries []memoryEntry
}

type memoryEntry struct {
	kind string
	body []byte
}

func (l *memoryLog) Record(ctx context.Context, kind string, body any) (uint64, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	if kind == node.LedgerKindResultCommitted {
		kind = node.EventRunFinished
	} else {
		kind, _ = body.(map[string]any)["event"].(string)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, memoryEntry{kind, b})
	return uint64(len(l.entries)), nil
}

func TestEventLogRecordsHashesNotData(t *testing.T) {
	s := newScenario(t)
	log := &memoryLog{}
	n, err := node.New(context.Background(), node.Options{DataDir: filepath.Join(t.TempDir(), "node"), Runner: runtime, NoSync: true,
		EventLog: log, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go n.Serve(ln)
	tn := &testNode{Node: n, url: "https://" + ln.Addr().String()}
	wasm := readTestdata(t, "sum.wasm")
	doc := s.sumPolicy(t, tn.platformKey(), "sum.wasm", wasm)
	c := dial(t, tn)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	as := createAttested(ctx, t, c, doc)
	s.provisionSum(t, as, "sum.wasm", wasm)
	if _, err := as.Result(ctx, s.dave.key, "sum"); err != nil {
		t.Fatal(err)
	}
	st, err := as.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := as.Close(ctx, s.dave.key); err != nil {
		t.Fatal(err)
	}
	// Entries are appended in the background: the close's is the last.
	if !n.WaitLedger(10 * time.Second) {
		t.Fatal("entries still pending after 10 s")
	}
	want := []string{node.EventSessionCreated, node.EventProgramUploaded, node.EventInputUploaded, node.EventInputUploaded,
		node.EventRunFinished, node.EventResultFetched, node.EventSessionClosed}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.entries) != len(want) {
		t.Fatalf("%d entries, want %d", len(log.entries), len(want))
	}
	for i, e := range log.entries {
		if e.kind != want[i] {
			t.Errorf("entry %d is %s, want %s", i+1, e.kind, want[i])
		}
		for _, secret := range [][]byte{[]byte("hello"), []byte("world"), []byte(byteSum("hello", "world"))} {
			if bytes.Contains(e.body, secret) {
				t.Errorf("entry %d (%s) carries data: %s", i+1, e.kind, e.body)
			}
		}
	}
	// Status shows each upload's ledger index.
	if st.Programs[0].EventIndex != 2 || st.Inputs[0].EventIndex != 3 || st.Inputs[1].EventIndex != 4 {
		t.Fatalf("ledger indexes in status: program %d, inputs %d %d", st.Programs[0].EventIndex, st.Inputs[0].EventIndex, st.Inputs[1].EventIndex)
	}
}
