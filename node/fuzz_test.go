package node

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/cloister/v1/cloisterv1connect"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/keys"
)

// FuzzLoadState feeds arbitrary bytes to the state loader, both as the
// raw log and as frames sealed under the right key (a good frame, then the
// fuzzed one): it must refuse or load, never panic, never load a record
// for another session, and never lose the good frame to an out-of-sequence one after it.
func FuzzLoadState(f *testing.F) {
	key := make([]byte, 32)
	dir := f.TempDir()
	st, err := openStore(dir, key, false)
	if err != nil {
		f.Fatal(err)
	}
	defer st.close()
	id := "0123456789abcdef0123456789abcdef"
	good, _ := json.Marshal(&record{Version: stateVersion, ID: id, State: stateProvisioning})
	f.Add([]byte{}, false, uint64(2))
	f.Add(good, true, uint64(2))
	f.Add(good, true, uint64(7))
	f.Add([]byte(`{"version":1,"id":"ffffffffffffffffffffffffffffffff"}`), true, uint64(2))
	f.Add([]byte("CLSL\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\xffgarbage"), false, uint64(0))
	f.Fuzz(func(t *testing.T, data []byte, sealIt bool, seq uint64) {
		file := data
		if sealIt {
			file = append(sealRawFrame(st, id, 1, good), sealRawFrame(st, id, seq, data)...)
		}
		if err := os.WriteFile(st.logPath(id), file, 0o600); err != nil {
			t.Fatal(err)
		}
		rec, err := st.load(id)
		if err == nil && rec.ID != id {
			t.Fatalf("loaded a record for %q from %s's file", rec.ID, id)
		}
		if sealIt && seq != 2 && err != nil {
			// The fuzzed frame is out of sequence: it ends the log, and
			// the good frame before it is the state.
			t.Fatalf("a log starting with a good frame did not load: %v", err)
		}
	})
}

// sealRawFrame seals arbitrary bytes as frame seq of session id.
func sealRawFrame(st *store, id string, seq uint64, plain []byte) []byte {
	nonce := make([]byte, st.aead.NonceSize())
	out := binary.BigEndian.AppendUint64([]byte(logMagic+"\x01"), seq)
	out = binary.BigEndian.AppendUint32(out, uint32(len(nonce)+len(plain)+st.aead.Overhead()))
	out = append(out, nonce...)
	return st.aead.Seal(out, nonce, plain, frameAAD(id, seq))
}

// FuzzUpload sends arbitrary uploads to a live session: whatever the
// fields, nothing is accepted unless signed by the listed provider.
func FuzzUpload(f *testing.F) {
	rt, err := isolate.New(context.Background(), isolate.Options{InProcess: true})
	if err != nil {
		f.Fatal(err)
	}
	defer rt.Close()
	n, err := New(context.Background(), Options{DataDir: f.TempDir(), Runner: rt, NoSync: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	defer n.Close()
	alice, _ := keys.Generate()
	dave, _ := keys.Generate()
	prog := []byte("\x00asm\x01\x00\x00\x00")
	sum := sha256.Sum256(prog)
	doc, _ := json.Marshal(map[string]any{
		"version": 1, "name": "fuzz",
		"principals": []any{
			map[string]any{"id": "alice", "signing_key": alice.Public().SigningString(), "roles": []string{"program-provider", "data-provider"}},
			map[string]any{"id": "dave", "signing_key": dave.Public().SigningString(), "sealing_key": dave.Public().SealingString(), "roles": []string{"result-reader"}},
		},
		"programs": []any{map[string]any{"name": "p.wasm", "sha256": hex.EncodeToString(sum[:]), "provider": "alice"}},
		"inputs":   []any{map[string]any{"name": "in", "provider": "alice"}},
		"outputs":  []any{map[string]any{"name": "out", "readers": []string{"dave"}}},
		"isolates": []any{map[string]any{"class": "software", "platform_keys": []string{keys.FormatSigningKey(n.PlatformKey())}}},
		"expires":  time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
	})
	s, err := n.createSession(context.Background(), &cloisterv1.CreateSessionRequest{Policy: doc}, "127.0.0.1:1")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(true, "p.wasm", []byte("x"), "alice", int64(0), []byte("0123456789abcdef"), []byte("sig"))
	f.Add(false, "in", []byte{}, "dave", time.Now().UnixMilli(), []byte{}, []byte{})
	f.Add(false, "../in", []byte("CLSE\x01"), "", int64(-1), []byte("n"), make([]byte, 64))
	f.Fuzz(func(t *testing.T, program bool, name string, envelope []byte, principal string, ms int64, nonce, sig []byte) {
		req := &cloisterv1.UploadRequest{SessionId: s.id, Name: name, Envelope: envelope,
			Auth: &cloisterv1.SignedRequest{Principal: principal, UnixMs: ms, Nonce: nonce, Signature: sig}}
		if _, err := s.upload(context.Background(), program, req); err == nil {
			t.Fatalf("accepted an unsigned upload %q from %q", name, principal)
		}
		// A correctly signed request over a garbage envelope is refused
		// by the seal check, never stored.
		if principal == "" {
			return
		}
		op := protocol.OpUploadInput
		if program {
			op = protocol.OpUploadProgram
		}
		ph := sha256.Sum256(envelope)
		now := time.Now().UnixMilli()
		nn := sha256.Sum256(append([]byte(name), envelope...))
		req.Auth = &cloisterv1.SignedRequest{Principal: "alice", UnixMs: now, Nonce: nn[:16],
			Signature: alice.Sign(protocol.RequestMessage(s.id, op, name, ph, s.hash, now, nn[:16]))}
		if _, err := s.upload(context.Background(), program, req); err == nil {
			t.Fatalf("accepted garbage envelope for %q", name)
		}
	})
}

// FuzzRPC sends arbitrary bodies, in either codec, compressed or not, to
// every RPC of the node's handler (node and session connections), with a
// live session to reach. Nothing may panic, every answer is a connect
// answer, the in-flight budget is whole again after each request, and no
// session appears unless a create succeeded.
func FuzzRPC(f *testing.F) {
	rt, err := isolate.New(context.Background(), isolate.Options{InProcess: true})
	if err != nil {
		f.Fatal(err)
	}
	defer rt.Close()
	n, err := New(context.Background(), Options{DataDir: f.TempDir(), Runner: rt, NoSync: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Admission: Admission{Quotas: Quotas{CreateRate: 1e6, CreateRatePerCreator: 1e6}}})
	if err != nil {
		f.Fatal(err)
	}
	defer n.Close()
	alice, _ := keys.Generate()
	doc, _ := json.Marshal(map[string]any{
		"version": 1, "name": "fuzz",
		"principals": []any{map[string]any{"id": "alice", "signing_key": alice.Public().SigningString(), "sealing_key": alice.Public().SealingString(),
			"roles": []string{"program-provider", "data-provider", "result-reader"}}},
		"programs": []any{map[string]any{"name": "p.wasm", "sha256": strings.Repeat("ab", 32), "provider": "alice"}},
		"outputs":  []any{map[string]any{"name": "out", "readers": []string{"alice"}}},
		"isolates": []any{map[string]any{"class": "software", "platform_keys": []string{keys.FormatSigningKey(n.PlatformKey())}}},
		"expires":  time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
	})
	s, err := n.createSession(context.Background(), &cloisterv1.CreateSessionRequest{Policy: doc}, "127.0.0.1:1")
	if err != nil {
		f.Fatal(err)
	}
	procs := []string{
		cloisterv1connect.NodeServiceCreateSessionProcedure, cloisterv1connect.NodeServiceGetStatusProcedure,
		cloisterv1connect.NodeServiceGetNodeInfoProcedure, cloisterv1connect.SessionServiceAttestProcedure,
		cloisterv1connect.SessionServiceUploadProgramProcedure, cloisterv1connect.SessionServiceUploadInputProcedure,
		cloisterv1connect.SessionServiceGetResultProcedure, cloisterv1connect.SessionServiceCloseSessionProcedure,
	}
	create, _ := proto.Marshal(&cloisterv1.CreateSessionRequest{Policy: doc})
	status, _ := proto.Marshal(&cloisterv1.GetStatusRequest{SessionId: s.id})
	upload, _ := proto.Marshal(&cloisterv1.UploadRequest{SessionId: s.id, Name: "p.wasm", Envelope: []byte("CLSE"),
		Auth: &cloisterv1.SignedRequest{Principal: "alice", Nonce: make([]byte, 16)}})
	f.Add(uint8(0), create, false, false)
	f.Add(uint8(0), []byte(`{"policy":"e30="}`), true, false)
	f.Add(uint8(1), status, false, false)
	f.Add(uint8(1), []byte(`{"sessionId":"`+s.id+`","waitMs":"1"}`), true, false)
	f.Add(uint8(2), []byte{}, false, true)
	f.Add(uint8(4), upload, false, false)
	f.Add(uint8(6), []byte(`{"sessionId":"`+s.id+`","output":"out"}`), true, false)
	h := n.Handler()
	f.Fuzz(func(t *testing.T, which uint8, body []byte, jsonCodec, gz bool) {
		proc := procs[int(which)%len(procs)]
		payload := body
		if gz {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write(body)
			zw.Close()
			payload = b.Bytes()
		}
		req := httptest.NewRequest("POST", "https://node"+proc, bytes.NewReader(payload))
		req.Header.Set("Content-Type", map[bool]string{false: "application/proto", true: "application/json"}[jsonCodec])
		if gz {
			req.Header.Set("Content-Encoding", "gzip")
		}
		sni := NodeServerName
		if strings.Contains(proc, "SessionService") {
			sni = protocol.ServerName(s.id)
		}
		req.TLS = &tls.ConnectionState{ServerName: sni}
		// Long polls (GetStatus's wait_ms) end with the request.
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		req = req.WithContext(ctx)
		n.mu.RLock()
		before := len(n.sessions)
		n.mu.RUnlock()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK && !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
			t.Fatalf("%s: status %d, content type %q: not a connect error", proc, rec.Code, rec.Header().Get("Content-Type"))
		}
		if got := n.inflight.cur.Load(); got != 0 {
			t.Fatalf("%s: %d bytes still counted in flight after the request", proc, got)
		}
		n.mu.RLock()
		after := len(n.sessions)
		n.mu.RUnlock()
		if after > before && (rec.Code != http.StatusOK || proc != cloisterv1connect.NodeServiceCreateSessionProcedure) {
			t.Fatalf("%s: a session appeared after an answer %d", proc, rec.Code)
		}
	})
}

// FuzzAdmissionToken parses arbitrary tokens: no panic, and a token that
// parses verifies for its own subject and issuer before it expires.
func FuzzAdmissionToken(f *testing.F) {
	op, _ := keys.Generate()
	sub, _ := keys.Generate()
	tok, err := IssueAdmissionToken(op, sub.Public().Signing, nil, time.Unix(2000000000, 0))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add("cat1.e30.AAAA")
	f.Add(tok[:len(tok)-2] + "AA")
	f.Fuzz(func(t *testing.T, s string) {
		at, issuer, err := ParseAdmissionToken(s)
		if err != nil {
			return
		}
		subject, err := keys.ParseSigningKey(at.Subject)
		if err != nil {
			t.Fatalf("parsed a token with subject %q: %v", at.Subject, err)
		}
		var node ed25519.PublicKey
		if at.Node != "" {
			node, _ = keys.ParseSigningKey(at.Node)
		} else {
			node = issuer // any node
		}
		if err := VerifyAdmissionToken(s, []ed25519.PublicKey{issuer}, subject, node, at.Expires.Add(-time.Second)); err != nil {
			t.Fatalf("a token that parses does not verify for its own subject before it expires: %v", err)
		}
	})
}
