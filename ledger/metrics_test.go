package ledger

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestValidatorMetrics: a validator serves Prometheus metrics on its API
// listener — the committed log, requests by route and status — and
// paths a client makes up all count under one series.
func TestValidatorMetrics(t *testing.T) {
	homes, err := GenerateTestnet(t.TempDir(), 1, TestnetOptions{ChainID: "test-chain"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, err := StartValidator(ctx, homes[0].Home, StartOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.Append(ctx, signEntry(t, newTestKey(t), KindNote, map[string]any{"n": 1})); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "GET", v.APIURL()+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(b)
	}
	get("/v1/status")
	for i := range 50 {
		get(fmt.Sprintf("/made-up/%d", i))
	}
	code, body := get("/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	for _, want := range []string{
		"cloister_ledger_entries 1\n",
		`cloister_http_requests_total{route="GET /v1/status",status="200"} 1` + "\n",
		`cloister_http_requests_total{route="/",status="404"} 50` + "\n",
		"cloister_connections_accepted_total ",
		"cloister_ledger_height ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
	if n := strings.Count(body, "cloister_http_requests_total{"); n != 2 {
		t.Errorf("%d request series, want 2 (made-up paths share one):\n%s", n, body)
	}
}
