package node

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/keys"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// kindsLedger is a ledger that takes every entry and keeps their kinds.
type kindsLedger struct {
	mu    sync.Mutex
	kinds []string
}

func (l *kindsLedger) Append(ctx context.Context, e *verify.SignedEntry) (verify.Receipt, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.kinds = append(l.kinds, string(e.Entry.Kind))
	return verify.Receipt{Index: uint64(len(l.kinds))}, nil
}

func (l *kindsLedger) has(kind string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.kinds, kind)
}

// laterReplicas reads a replica set of two in which only this node has
// committed, until other is set: then the other member committed other.
type laterReplicas struct {
	mu          sync.Mutex
	set, self   string
	peer, other string
	digest      string
}

func (r *laterReplicas) ReplicaSet(ctx context.Context, id string) (*lclient.ReplicaSet, map[uint64][]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rs := &lclient.ReplicaSet{Set: r.set, Members: []lclient.ReplicaMember{
		{Node: r.self, Result: 10, Digest: r.digest},
		{Node: r.peer},
	}}
	if r.other != "" {
		rs.Members[1].Result, rs.Members[1].Digest = 11, r.other
	}
	return rs, nil, nil
}

// A replica that committed its result before its node stopped goes on
// watching its set after the restart: a disagreement that appears then is
// recorded on the ledger without any reader asking for the result.
func TestReplicaWatchResumedAfterRestart(t *testing.T) {
	dir := t.TempDir()
	app := &kindsLedger{}
	peer, _ := keys.Generate()
	rr := &laterReplicas{set: "00112233445566778899aabbccddeeff", peer: peer.Public().SigningString()}
	rt, err := isolate.New(context.Background(), isolate.Options{InProcess: true, InProcessNoCancel: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	open := func(now func() time.Time) *Node {
		n, err := New(context.Background(), Options{DataDir: dir, Runner: rt, NoSync: true, Ledger: app, Replicas: rr, Now: now,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	n := open(nil)
	rr.self = n.platform.Public().SigningString()

	wasm, err := os.ReadFile(filepath.Join("testdata", "sum.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	alice, _ := keys.Generate()
	dave, _ := keys.Generate()
	doc := replicatedPolicyDoc(t, n, wasm, alice, dave)
	s, err := n.createSession(context.Background(), &cloisterv1.CreateSessionRequest{Policy: doc,
		Replica: &cloisterv1.ReplicaSet{Id: rr.set, Members: []string{rr.self, rr.peer}}}, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	is := &internalSession{t: t, s: s, alice: alice, dave: dave, wasm: wasm, programName: "sum.wasm"}
	is.provision()
	is.wait()
	s.mu.Lock()
	digest := s.rec.Replica.Digest
	s.mu.Unlock()
	if digest == "" {
		t.Fatal("the replica committed no digest")
	}
	if !n.WaitLedger(10 * time.Second) {
		t.Fatal("entries still pending")
	}
	n.Close()
	if app.has(LedgerKindReplicaDiscrepancy) {
		t.Fatal("discrepancy recorded before the other replica committed")
	}

	rr.mu.Lock()
	rr.digest, rr.other = digest, "ff"+digest[2:]
	rr.mu.Unlock()
	// Started past the watch's bound, the node leaves the set to readers.
	late := open(func() time.Time { return time.Now().Add(replicaWatchBound + time.Minute) })
	time.Sleep(2500 * time.Millisecond) // the watch reads the set every second
	late.Close()
	if app.has(LedgerKindReplicaDiscrepancy) {
		t.Fatal("the node watched the set past replicaWatchBound after its run ended")
	}
	open(nil)
	for deadline := time.Now().Add(30 * time.Second); !app.has(LedgerKindReplicaDiscrepancy); {
		if time.Now().After(deadline) {
			t.Fatal("after the restart the node did not record the replicas' discrepancy")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// replicatedPolicyDoc is sumPolicyDoc asking for two deterministic replicas.
func replicatedPolicyDoc(t *testing.T, n *Node, wasm []byte, alice, dave *keys.PrivateKey) []byte {
	var m map[string]any
	if err := json.Unmarshal(sumPolicyDoc(t, n, "sum.wasm", wasm, alice, dave), &m); err != nil {
		t.Fatal(err)
	}
	m["deterministic"], m["replicas"] = true, 2
	doc, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}
