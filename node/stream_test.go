package node_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/isolate"
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

// TestStreamedUploadRefusals: a streamed upload is refused when its
// commit does not match what arrived, when it comes from someone else than
// the item's provider, and when a program's plaintext is not the policy's.
func TestStreamedUploadRefusals(t *testing.T) {
	s := newScenario(t)
	tn := startNode(t, t.TempDir(), nil)
	c := dial(t, tn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	as := createAttested(ctx, t, c, s.policyDoc(t, tn.platformKey(), nil))
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
