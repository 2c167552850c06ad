package probe

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A verdict is reused within TTL, so probes from anyone cost one check per
// period; reasons come back as 503, one line each.
func TestReadyReusesVerdict(t *testing.T) {
	checks := 0
	p := &Ready{Check: func(context.Context) []string { checks++; return []string{"ledger: down", "attestation: none"} }}
	for range 5 {
		rec := httptest.NewRecorder()
		p.Readyz(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		if rec.Code != http.StatusServiceUnavailable || strings.TrimSpace(rec.Body.String()) != "ledger: down\nattestation: none" {
			t.Fatalf("%d %q", rec.Code, rec.Body.String())
		}
	}
	if checks != 1 {
		t.Errorf("%d checks for 5 probes within the TTL, want 1", checks)
	}
}
