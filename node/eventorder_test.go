package node

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/keys"
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
	if kind == EventSessionClosed {
		b, err := os.ReadFile(filepath.Join(l.dir, "sessions", closedLog))
		if err != nil || !strings.Contains(string(b), id) {
			l.t.Errorf("%s recorded before the tombstone was written: %v", kind, err)
		}
	} else {
		data, err := os.ReadFile(filepath.Join(l.dir, "sessions", id, logFile))
		if err != nil {
			l.t.Errorf("%s: %v", kind, err)
			return 0, err
		}
		rec, _, err := l.st.parseLog(id, data)
		if err != nil {
			l.t.Errorf("%s: %v", kind, err)
			return 0, err
		}
		if last := rec.Events[len(rec.Events)-1]; last.Kind != kind {
			l.t.Errorf("%s recorded while the state on disk ends with %s", kind, last.Kind)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.kinds = append(l.kinds, kind)
	return uint64(len(l.kinds)), nil
}

func TestEventsRecordedAfterCommit(t *testing.T) {
	dir := t.TempDir()
	rt, err := isolate.New(context.Background(), isolate.Options{InProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
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
	n, err := New(context.Background(), Options{DataDir: dir, Runner: rt, EventLog: log, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()

	wasm, err := os.ReadFile(filepath.Join("testdata", "sum.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	alice, _ := keys.Generate()
	dave, _ := keys.Generate()
	sum := sha256.Sum256(wasm)
	doc, _ := json.Marshal(map[string]any{
		"version": 1, "name": "order",
		"principals": []any{
			map[string]any{"id": "alice", "signing_key": alice.Public().SigningString(), "roles": []string{"program-provider", "data-provider"}},
			map[string]any{"id": "dave", "signing_key": dave.Public().SigningString(), "sealing_key": dave.Public().SealingString(), "roles": []string{"result-reader"}},
		},
		"programs": []any{map[string]any{"name": "sum.wasm", "sha256": hex.EncodeToString(sum[:]), "provider": "alice"}},
		"inputs":   []any{map[string]any{"name": "a", "provider": "alice"}, map[string]any{"name": "b", "provider": "alice"}},
		"outputs":  []any{map[string]any{"name": "sum", "readers": []string{"dave"}}},
		"isolates": []any{map[string]any{"class": "software", "platform_keys": []string{keys.FormatSigningKey(n.PlatformKey())}}},
		"limits":   map[string]any{"memory": "16MiB", "timeout": "60s", "max_output": "4KiB"},
		"expires":  time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
	})
	ctx := context.Background()
	s, err := n.createSession(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(k *keys.PrivateKey, principal, op, name string, payload []byte) *cloisterv1.SignedRequest {
		nonce := make([]byte, 16)
		rand.Read(nonce)
		var ph [32]byte
		if payload != nil {
			ph = sha256.Sum256(payload)
		}
		ms := time.Now().UnixMilli()
		return &cloisterv1.SignedRequest{Principal: principal, UnixMs: ms, Nonce: nonce, Signature: k.Sign(protocol.RequestMessage(s.id, op, name, ph, s.hash, ms, nonce))}
	}
	hpub, err := seal.ParsePublicKey(s.core.hpkePub)
	if err != nil {
		t.Fatal(err)
	}
	upload := func(program bool, name string, data []byte) {
		kind, op := protocol.KindInput, protocol.OpUploadInput
		if program {
			kind, op = protocol.KindProgram, protocol.OpUploadProgram
		}
		env, err := seal.Seal(hpub, data, protocol.SealInfo(kind, s.id, name, ""), protocol.SealAAD(s.hash))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.upload(ctx, program, &cloisterv1.UploadRequest{SessionId: s.id, Name: name, Envelope: env, Auth: sign(alice, "alice", op, name, env)}); err != nil {
			t.Fatalf("upload %s: %v", name, err)
		}
	}
	upload(true, "sum.wasm", wasm)
	upload(false, "a", []byte("hello"))
	upload(false, "b", []byte("world"))
	select {
	case <-s.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("run did not end")
	}
	resp, err := s.result(ctx, &cloisterv1.GetResultRequest{SessionId: s.id, Output: "sum", Auth: sign(dave, "dave", protocol.OpGetResult, "sum", nil)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := dave.Open(resp.Envelope, protocol.SealInfo(protocol.KindOutput, s.id, "sum", "dave"), protocol.SealAAD(s.hash))
	if err != nil || string(got) != "1084\n" {
		t.Fatalf("result %q, %v", got, err)
	}
	if _, err := s.close(ctx, &cloisterv1.CloseSessionRequest{SessionId: s.id, Auth: sign(dave, "dave", protocol.OpClose, "", nil)}); err != nil {
		t.Fatal(err)
	}
	want := []string{EventSessionCreated, EventProgramUploaded, EventInputUploaded, EventInputUploaded, EventRunFinished, EventResultFetched, EventSessionClosed}
	if fmt.Sprint(log.kinds) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", log.kinds, want)
	}
}
