package dispatch

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	lclient "github.com/cloisterhq/cloister/ledger/client"
)

// The probes and metrics of an orchestrator: /healthz while serving,
// /readyz only while the ledger answers (it names the ledger otherwise),
// /metrics with the dispatcher's own series and routes from its table.
func TestProbesAndMetrics(t *testing.T) {
	get := func(h http.Handler, path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	newDispatcher := func(url string) http.Handler {
		lc, err := lclient.New(url)
		if err != nil {
			t.Fatal(err)
		}
		k, _ := keys.Generate()
		d, err := New(Options{Ledger: lc, Key: k.Signer()})
		if err != nil {
			t.Fatal(err)
		}
		return d.Handler()
	}

	down := newDispatcher("http://127.0.0.1:1") // nothing listens on port 1
	if code, body := get(down, "/healthz"); code != http.StatusOK {
		t.Errorf("healthz: %d %s", code, body)
	}
	if code, body := get(down, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "ledger:") {
		t.Errorf("readyz without a ledger: %d %q, want 503 naming the ledger", code, body)
	}

	e, err := ledger.OpenEmbedded(context.Background(), t.TempDir(), ledger.EmbeddedOptions{ChainID: "dispatch-probes"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e.Handler())
	t.Cleanup(func() { srv.Close(); e.Close() })
	up := newDispatcher(srv.URL)
	if code, body := get(up, "/readyz"); code != http.StatusOK {
		t.Errorf("readyz with a ledger: %d %q", code, body)
	}
	get(up, "/v1/requests/nothing")
	code, body := get(up, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("metrics: %d %s", code, body)
	}
	for _, want := range []string{"cloister_dispatch_open_requests 0", "cloister_dispatch_tickets 0",
		`cloister_http_requests_total{route="GET /readyz",status="200"} 1`, `route="GET /v1/requests/{id}"`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}
