package server_test

import (
	"bytes"
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/blob"
	"github.com/cloisterhq/cloister/blob/server"
)

// FuzzHandler: any request to a store — method, path, signature, body —
// is answered with a 2xx, 3xx or a 4xx naming what is wrong (503 when
// the store is full), never a panic or another 5xx. Requests signed by an
// admitted key reach past authentication, so uploads are fuzzed too.
func FuzzHandler(f *testing.F) {
	_, key, _ := ed25519.GenerateKey(nil)
	srv, err := server.New(server.Options{Dir: f.TempDir(), Pushers: map[string]int64{server.PublicKeyString(key.Public().(ed25519.PublicKey)): 1 << 20},
		Limits: server.Limits{MaxBlob: 64 << 10, MaxTotal: 1 << 20}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	h := srv.Handler()
	d := blob.FromBytes([]byte("hello"))
	for _, c := range []struct {
		method, path string
		sign         bool
		body         string
	}{
		{"GET", "/v2/", false, ""},
		{"HEAD", "/v2/p/blobs/" + string(d), false, ""},
		{"POST", "/v2/p/blobs/uploads/", true, ""},
		{"POST", "/v2/p/blobs/uploads/?digest=" + string(d), true, "hello"},
		{"PUT", "/v2/p/manifests/sha256-x", true, `{"schemaVersion":2}`},
		{"GET", "/v2/p/tags/list", false, ""},
		{"DELETE", "/v2/p/blobs/" + string(d), true, ""},
	} {
		f.Add(c.method, c.path, c.sign, []byte(c.body))
	}
	f.Fuzz(func(t *testing.T, method, path string, sign bool, body []byte) {
		req, err := http.NewRequest(method, "http://store.test"+path, bytes.NewReader(body))
		if err != nil {
			return
		}
		if sign {
			req.Header.Set("Authorization", blob.SignRequest(key, req.Method, req.Host, req.URL.RequestURI(), time.Now()))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %s: status %d: %s", method, path, rec.Code, rec.Body.Bytes())
		}
	})
}
