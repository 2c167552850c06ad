package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cloisterhq/cloister/ledger/verify"
)

var testNonce atomic.Uint64

func newTestKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signEntry(t testing.TB, key ed25519.PrivateKey, kind verify.Kind, body any) *verify.SignedEntry {
	t.Helper()
	se, err := verify.NewEntryWithNonce(key, kind, body, testNonce.Add(1), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return se
}

func openTestEmbedded(t testing.TB, dir string) *Embedded {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := OpenEmbedded(ctx, dir, EmbeddedOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// apiClient is a minimal client of the HTTP API for tests; the real
// client lives in ledger/client.
type apiClient struct {
	t    testing.TB
	base string
}

func serveAPI(t testing.TB, h http.Handler) *apiClient {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &apiClient{t: t, base: srv.URL}
}

func (c *apiClient) do(method, path string, body []byte) (int, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return res.StatusCode, b
}

func (c *apiClient) getJSON(path string, v any) {
	c.t.Helper()
	status, b := c.do("GET", path, nil)
	if status != 200 {
		c.t.Fatalf("GET %s: %d %s", path, status, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		c.t.Fatalf("GET %s: %v in %s", path, err, b)
	}
}

// wantError checks an error response's status and code.
func wantError(t testing.TB, status int, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	var e errorJSON
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %s: %v", body, err)
	}
	if status != wantStatus || e.Code != wantCode || e.Error == "" {
		t.Fatalf("got %d %s, want %d code %s", status, body, wantStatus, wantCode)
	}
}

func wantRejected(t testing.TB, err error, code string) {
	t.Helper()
	var rej *verify.RejectedError
	if !errors.As(err, &rej) || rej.Code != code {
		t.Fatalf("err = %v, want RejectedError code %s", err, code)
	}
}

// verifiedCheckpoint fetches the latest checkpoint that covers at least
// size entries, verifying it against the published validator set.
func (c *apiClient) verifiedCheckpoint(size uint64) logHead {
	c.t.Helper()
	var vals validatorsJSON
	c.getJSON("/v1/validators", &vals)
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, b := c.do("GET", "/v1/checkpoint", nil)
		if status == 200 {
			cp, err := openCheckpoint(b, vals)
			if err != nil {
				c.t.Fatalf("checkpoint does not verify: %v\n%s", err, b)
			}
			if cp.Size >= size {
				return cp
			}
		} else if status != 404 {
			c.t.Fatalf("GET /v1/checkpoint: %d %s", status, b)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no checkpoint covering %d entries within 20s (last: %d %s)", size, status, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkInclusion fetches entry i and its inclusion proof against cp and
// verifies them the way a client must: leaf hash recomputed from the
// entry bytes.
func (c *apiClient) checkInclusion(i uint64, cp logHead) error {
	c.t.Helper()
	var e entryJSON
	c.getJSON(fmt.Sprintf("/v1/entries/%d", i), &e)
	var p struct {
		Index    uint64   `json:"index"`
		Size     uint64   `json:"size"`
		LeafHash []byte   `json:"leaf_hash"`
		Hashes   [][]byte `json:"hashes"`
	}
	c.getJSON(fmt.Sprintf("/v1/proof/inclusion?index=%d&size=%d", i, cp.Size), &p)
	proof := make(tlog.RecordProof, len(p.Hashes))
	for j, h := range p.Hashes {
		copy(proof[j][:], h)
	}
	return tlog.CheckRecord(proof, int64(cp.Size), cp.Root, int64(i), tlog.RecordHash(e.Entry))
}

// openCheckpoint verifies a signed checkpoint against the validator set
// the API published, the way a client does (verify.OpenCheckpoint).
func openCheckpoint(b []byte, vals validatorsJSON) (logHead, error) {
	vs, err := verify.NewValidatorSet(vals.ChainID, vals.Validators)
	if err != nil {
		return logHead{}, err
	}
	cp, err := verify.OpenCheckpoint(b, vs)
	if err != nil {
		return logHead{}, err
	}
	return logHead{cp.Origin, cp.Size, cp.Root}, nil
}
