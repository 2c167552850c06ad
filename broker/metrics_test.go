package broker

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/internal/httpguard"
)

// TestMetrics: the broker serves Prometheus metrics on its listener —
// shares held, requests by route and status, the listener's connections —
// and paths a client makes up do not add series.
func TestMetrics(t *testing.T) {
	b, err := New(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpguard.NewServer(b.Handler(), httpguard.Limits{}, b.ConnStats(), nil)
	go srv.Serve(httpguard.Listen(ln, httpguard.Limits{}, b.ConnStats()))
	defer srv.Close()
	url := "http://" + ln.Addr().String()
	do := func(method, path string, body []byte) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url+path, bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(b)
	}
	do("GET", "/healthz", nil)
	do("POST", "/v1/keys", []byte("not json"))
	for i := range 30 {
		do("GET", fmt.Sprintf("/made-up/%d", i), nil)
	}
	code, body := do("GET", "/metrics", nil)
	if code != 200 {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	for _, want := range []string{
		"cloister_broker_keys 0\n",
		"cloister_broker_nonces 0\n",
		`cloister_http_requests_total{route="GET /healthz",status="200"} 1` + "\n",
		`cloister_http_requests_total{route="POST /v1/keys",status="400"} 1` + "\n",
		`cloister_http_requests_total{route="other",status="404"} 30` + "\n",
		"cloister_connections_accepted_total ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
	if n := strings.Count(body, "cloister_http_requests_total{"); n != 3 {
		t.Errorf("%d request series, want 3 (made-up paths share one):\n%s", n, body)
	}
}
