package ledger

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzAPI sends arbitrary requests (method, path, query, body) to the
// ledger's HTTP API over a live embedded ledger. No request may panic the
// handler or get a 5xx other than 503 (the store is unreadable), an error
// is always the JSON error body, and nothing a request sends without a
// valid signature is appended.
func FuzzAPI(f *testing.F) {
	// A logger of its own: the ledger's error lines must not reach f from
	// inside the fuzz function.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	e, err := OpenEmbedded(ctx, f.TempDir(), EmbeddedOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	cancel()
	if err != nil {
		f.Fatal(err)
	}
	defer e.Close()
	h := e.Handler()
	key := newTestKey(f)
	good := signEntry(f, key, KindNote, map[string]any{"seed": 1}).Encode()
	f.Add(uint8(0), "/v1/entries/0", "", []byte(nil))
	f.Add(uint8(0), "/v1/entries", "from=0&limit=5", []byte(nil))
	f.Add(uint8(0), "/v1/proof/inclusion", "index=0&size=1", []byte(nil))
	f.Add(uint8(0), "/v1/proof/consistency", "from=1&to=1", []byte(nil))
	f.Add(uint8(0), "/v1/checkpoint", "size=1", []byte(nil))
	f.Add(uint8(0), "/v1/members/00", "", []byte(nil))
	f.Add(uint8(0), "/v1/validators", "", []byte(nil))
	f.Add(uint8(1), "/v1/entries", "", bytes.Replace(good, []byte(`"seed":1`), []byte(`"seed":2`), 1))
	f.Add(uint8(1), "/v1/entries/batch", "wait=false", []byte(`{"entries":[{"entry":{}},1]}`))
	f.Add(uint8(2), "/v1/status", "", []byte("x"))
	methods := []string{"GET", "POST", "PUT", "DELETE", "HEAD"}
	f.Fuzz(func(t *testing.T, m uint8, path, query string, body []byte) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#?") || strings.ContainsAny(query, " \r\n\t#") {
			return
		}
		if strings.HasPrefix(path, "/v1/entries") && methods[int(m)%len(methods)] == "POST" && bytes.Contains(body, []byte(`"sig"`)) {
			// A well-formed entry with a signature the fuzzer cannot
			// forge is refused; one it could copy from the seeds would be
			// a replay. Either way it waits for a block: skip the wait.
			return
		}
		u, err := url.Parse("http://ledger" + path + "?" + query)
		if err != nil {
			return // no client can send it
		}
		req := httptest.NewRequest(methods[int(m)%len(methods)], u.String(), bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable:
			t.Fatalf("%s %s?%s: status %d: %s", req.Method, path, query, rec.Code, rec.Body.Bytes())
		case rec.Code >= 400 && rec.Code != http.StatusMethodNotAllowed && !bytes.HasPrefix(rec.Body.Bytes(), []byte(`{"error":`)):
			t.Fatalf("%s %s?%s: status %d without a JSON error: %.200s", req.Method, path, query, rec.Code, rec.Body.Bytes())
		}
	})
}
