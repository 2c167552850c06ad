package node_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/node"
)

// chachaReader gives n pseudo-random bytes, never holding them.
type chachaReader struct {
	r *rand.ChaCha8
	n int64
}

func (c *chachaReader) Read(p []byte) (int, error) {
	if c.n == 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), c.n)]
	c.r.Read(p)
	c.n -= int64(len(p))
	return len(p), nil
}

// TestStreamedInputSession: a 256 MiB input is sealed as it is read,
// streamed in chunks over a connection that drops once mid-way (the
// client resumes from where the node stopped), authenticated whole by the
// node at the commit, and read by the guest in a worker under 64 MiB of
// memory, which decrypts it as it reads: the digest the guest computes is
// the input's. Nothing holds the input whole, on the client or the node.
func TestStreamedInputSession(t *testing.T) {
	const size = 256 << 20
	s := newScenario(t)
	prog, err := examples.Lookup("sha256sum")
	if err != nil {
		t.Fatal(err)
	}
	var chunks, dropped atomic.Int64
	drop := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/PutChunk") && chunks.Add(1) == 10 {
				dropped.Add(1)
				io.Copy(io.Discard, r.Body)
				panic(http.ErrAbortHandler) // the connection is cut, no answer
			}
			h.ServeHTTP(w, r)
		})
	}
	tn := startNode(t, t.TempDir(), drop)
	c := dial(t, tn)
	doc := s.policyDoc(t, tn.platformKey(), func(d map[string]any) {
		d["programs"] = []any{map[string]any{"name": "sha256sum.wasm", "sha256": sha256hex(prog.Wasm), "provider": "alice"}}
		d["inputs"] = []any{map[string]any{"name": "big.bin", "provider": "bob"}}
		d["outputs"] = []any{map[string]any{"name": "sha256.json", "readers": []string{"dave"}}}
		d["limits"] = map[string]any{"memory": "64MiB", "timeout": "10m", "max_output": "1MiB"}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	// Compile the module once, bounded apart from the session's limit.
	res, err := runtime.Run(ctx, &isolate.Config{Module: prog.Wasm, Inputs: []isolate.Input{{Name: "x", Data: []byte("x")}}, Timeout: 15 * time.Minute})
	if err != nil || res.Report.Outcome != isolate.OutcomeExited {
		t.Fatalf("warm-up run: %v %+v", err, res)
	}
	res.Close()

	as := createAttested(ctx, t, c, doc)
	// The program streamed too: only the worker opens it.
	if _, err := as.UploadProgramStream(ctx, s.alice.key, "sha256sum.wasm", strings.NewReader(string(prog.Wasm)), int64(len(prog.Wasm))); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	src := io.TeeReader(&chachaReader{r: rand.NewChaCha8([32]byte{7}), n: size}, h)
	start := time.Now()
	up, err := as.UploadInputStream(ctx, s.bob.key, "big.bin", src, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("256 MiB sealed, streamed and authenticated in %v (%d chunks, %d dropped)", time.Since(start).Round(time.Millisecond), chunks.Load(), dropped.Load())
	if dropped.Load() != 1 {
		t.Errorf("%d connections dropped, want 1: the test did not exercise resuming", dropped.Load())
	}
	if len(up.EnvelopeSHA256) != 64 {
		t.Errorf("receipt %q", up.EnvelopeSHA256)
	}
	st, err := as.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != cloisterv1.SessionState_SESSION_STATE_FINISHED {
		t.Fatalf("state %v, reason %q, report %v", st.State, st.Reason, st.Report)
	}
	out, err := as.Result(ctx, s.dave.key, "sha256.json")
	if err != nil {
		t.Fatal(err)
	}
	var digests []struct {
		Name   string
		Bytes  int64
		SHA256 string
	}
	if err := json.Unmarshal(out, &digests); err != nil {
		t.Fatal(err)
	}
	want := hex.EncodeToString(h.Sum(nil))
	if len(digests) != 1 || digests[0].Bytes != size || digests[0].SHA256 != want {
		t.Fatalf("the guest read %+v, want big.bin of %d bytes with SHA-256 %s", digests, size, want)
	}
}

// attestedOnNewNode starts a node with the scenario's policy and returns
// an attested session on it and a context bounding the test.
func attestedOnNewNode(t *testing.T) (*scenario, context.Context, *client.AttestedSession) {
	s := newScenario(t)
	tn := startNode(t, t.TempDir(), nil)
	c := dial(t, tn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return s, ctx, createAttested(ctx, t, c, s.policyDoc(t, tn.platformKey(), nil))
}

// TestStreamedUploadRefusals: a streamed upload is refused when its
// commit does not match what arrived, when it comes from someone else than
// the item's provider, and when a program's plaintext is not the policy's.
func TestStreamedUploadRefusals(t *testing.T) {
	s, ctx, as := attestedOnNewNode(t)
	if _, err := as.UploadInputStream(ctx, s.carol.key, "customers.csv", strings.NewReader("x"), 1); err == nil || !strings.Contains(err.Error(), "provider") {
		t.Errorf("an upload by another principal than the provider: %v", err)
	}
	wrong := []byte("not the program the policy pins")
	if _, err := as.UploadProgramStream(ctx, s.alice.key, "psi-sum.wasm", strings.NewReader(string(wrong)), int64(len(wrong))); err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Errorf("a program that is not the policy's: %v", err)
	}
	if _, err := as.UploadInputStream(ctx, s.bob.key, "customers.csv", strings.NewReader("short"), 10); err == nil || !strings.Contains(err.Error(), "read 5 bytes") {
		t.Errorf("a reader shorter than declared: %v", err)
	}
	// The same item streamed properly is then accepted.
	if _, err := as.UploadInputStream(ctx, s.bob.key, "customers.csv", strings.NewReader(string(s.input(t, "customers.csv"))), int64(len(s.input(t, "customers.csv")))); err != nil {
		t.Errorf("a proper streamed upload after refused ones: %v", err)
	}
}

// TestStreamCommitLeavesSessionFree: while a streamed upload's commit
// authenticates its file (a pass over the whole file, then an fsync), the
// session answers its other requests. On a commit that held the
// session's lock, the status request below would wait for the commit,
// which waits for it.
func TestStreamCommitLeavesSessionFree(t *testing.T) {
	s, ctx, as := attestedOnNewNode(t)
	answered := make(chan error, 1)
	defer node.SetCommitHook(func() {
		// Bounded only against a hang: the status must come back while
		// the commit waits here.
		sctx, scancel := context.WithTimeout(ctx, time.Minute)
		defer scancel()
		_, err := as.Status(sctx)
		answered <- err
	})()
	in := s.input(t, "customers.csv")
	if _, err := as.UploadInputStream(ctx, s.bob.key, "customers.csv", bytes.NewReader(in), int64(len(in))); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("status during the commit: %v", err)
		}
	default:
		t.Fatal("the commit never checked its file")
	}
}

// TestStreamedOutput: an output kept as a sealed file (here every output,
// with a 64-byte chunk) is fetched by range over a connection that drops
// once mid-way, resumes, authenticates and is the program's output; a
// second fetch reuses the reader's read id; the result commitment on the
// node's log names the stream manifest, which the reader can check.
func TestStreamedOutput(t *testing.T) {
	s := newScenario(t)
	var reads, dropped atomic.Int64
	drop := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/ReadResult") && reads.Add(1) == 3 {
				dropped.Add(1)
				panic(http.ErrAbortHandler)
			}
			h.ServeHTTP(w, r)
		})
	}
	opts := testOptions(t, t.TempDir())
	opts.Limits = node.Limits{StreamOutputAbove: 1, MaxChunkBytes: 64}
	tn := startNodeOpts(t, opts, drop)
	c := dial(t, tn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	as := createAttested(ctx, t, c, s.policyDoc(t, tn.platformKey(), nil))
	s.provision(t, as)
	want := s.output(t, "result.json")
	got, err := as.Result(ctx, s.dave.key, "result.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("streamed output %q, want %q", got, want)
	}
	if dropped.Load() != 1 || reads.Load() < 4 {
		t.Errorf("%d reads, %d dropped: the test did not exercise resuming", reads.Load(), dropped.Load())
	}
	before := reads.Load()
	var b bytes.Buffer
	if n, err := as.ResultTo(ctx, s.dave.key, "result.json", &b); err != nil || n != int64(len(want)) || !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("second fetch: %d bytes, %v", n, err)
	}
	if reads.Load() == before {
		t.Error("the second fetch read nothing from the node")
	}
	// Someone else than the reader gets nothing.
	if _, err := as.Result(ctx, s.carol.key, "result.json"); err == nil {
		t.Error("a principal that is not a reader fetched the output")
	}
}

// TestStreamFramesHostile: the frames of a streamed upload and of a
// streamed output, sent by a client that ignores the rules, are each
// refused for the right reason before anything is kept: a size of zero
// or past the limit, a chunk out of order, one past the declared size,
// one under a made-up upload id, a commit before every byte arrived, a
// commit whose key does not open, a chunk after the session stopped
// taking uploads, a read under a made-up read id.
func TestStreamFramesHostile(t *testing.T) {
	s := newScenario(t)
	tn, _, as, doc := setup(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	raw := newRawSession(t, tn, as.ID(), mustParse(t, doc).Hash())
	const name = "customers.csv"
	begin := func(size int64) ([]byte, error) {
		resp, err := raw.svc.BeginUpload(ctx, connect.NewRequest(&cloisterv1.BeginUploadRequest{SessionId: as.ID(), Name: name, Size: size,
			Auth: raw.sign(t, s.bob.key, "bob", protocol.OpBeginUploadInput, name, binary.BigEndian.AppendUint64(nil, uint64(size)))}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.UploadId, nil
	}
	put := func(id []byte, off int64, data []byte) (int64, error) {
		resp, err := raw.svc.PutChunk(ctx, connect.NewRequest(&cloisterv1.PutChunkRequest{SessionId: as.ID(), UploadId: id, Offset: off, Data: data}))
		if err != nil {
			return 0, err
		}
		return resp.Msg.Received, nil
	}
	commit := func(id []byte, size int64, sum [32]byte, keyEnv []byte) error {
		m := protocol.StreamManifest(size, sum, keyEnv)
		_, err := raw.svc.CommitUpload(ctx, connect.NewRequest(&cloisterv1.CommitUploadRequest{SessionId: as.ID(), UploadId: id,
			KeyEnvelope: keyEnv, CiphertextSha256: sum[:], Auth: raw.sign(t, s.bob.key, "bob", protocol.OpUploadInput, name, m)}))
		return err
	}
	for _, size := range []int64{0, -1, node.DefaultMaxStreamBytes + 1} {
		if _, err := begin(size); err == nil || !strings.Contains(err.Error(), "request-size") {
			t.Errorf("an upload of %d bytes: %v", size, err)
		}
	}
	const size = 1000
	id, err := begin(size)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{7}, size)
	if _, err := put(id, 10, data[:10]); connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "holds 0 bytes") {
		t.Errorf("a chunk out of order: %v", err)
	}
	if _, err := put(id, 0, append(bytes.Clone(data), 1)); err == nil || !strings.Contains(err.Error(), "past the declared") {
		t.Errorf("a chunk past the declared size: %v", err)
	}
	if _, err := put(bytes.Repeat([]byte{1}, 32), 0, data[:10]); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("a chunk under a made-up upload id: %v", err)
	}
	if got, err := put(id, 0, data[:500]); err != nil || got != 500 {
		t.Fatalf("a proper chunk: %d, %v", got, err)
	}
	if got, err := put(id, 0, nil); err != nil || got != 500 {
		t.Errorf("asking how much the node holds: %d, %v", got, err)
	}
	sum := sha256.Sum256(data)
	if err := commit(id, size, sum, []byte("not an envelope")); connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "holds 500 of the 1000") {
		t.Errorf("a commit before every byte arrived: %v", err)
	}
	if _, err := put(id, 500, data[500:]); err != nil {
		t.Fatal(err)
	}
	if err := commit(id, size, sha256.Sum256([]byte("other")), []byte("not an envelope")); err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Errorf("a commit naming other bytes: %v", err)
	}
	if err := commit(id, size, sum, []byte("not an envelope")); err == nil || !strings.Contains(err.Error(), "sealed-to-session") {
		t.Errorf("a commit whose key does not open: %v", err)
	}
	st, err := as.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range st.Inputs {
		if in.Present {
			t.Errorf("input %s is present after refused commits", in.Name)
		}
	}
	_, err = raw.svc.ReadResult(ctx, connect.NewRequest(&cloisterv1.ReadResultRequest{SessionId: as.ID(), ReadId: bytes.Repeat([]byte{2}, 32), Length: 64}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("a read under a made-up read id: %v", err)
	}
	// Closing the session ends every upload under way.
	if err := as.Close(ctx, s.dave.key); err != nil {
		t.Fatal(err)
	}
	if _, err := put(id, size, []byte("x")); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("a chunk after the session closed: %v", err)
	}
}
