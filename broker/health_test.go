package broker

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// statusLedger is a ledger whose status the test sets.
type statusLedger struct {
	st  *client.Status
	err error
}

func (l *statusLedger) Get(context.Context, uint64) (*client.Entry, error) {
	return nil, errors.New("not here")
}

func (l *statusLedger) Append(context.Context, *verify.SignedEntry) (verify.Receipt, error) {
	return verify.Receipt{}, errors.New("not here")
}

func (l *statusLedger) Status(context.Context) (*client.Status, error) { return l.st, l.err }

// The probes: ready only with a ledger that answers and is caught up.
func TestProbes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ledger Ledger
		code   int
		says   string
	}{
		{"no ledger", nil, 503, "none configured"},
		{"ledger down", &statusLedger{err: errors.New("connection refused")}, 503, "connection refused"},
		{"catching up", &statusLedger{st: &client.Status{Height: 7, CatchingUp: true}}, 503, "catching up (at height 7)"},
		{"ready", &statusLedger{st: &client.Status{Height: 7}}, 200, "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := New(Options{Dir: t.TempDir(), Ledger: tc.ledger})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(b.Handler())
			defer srv.Close()
			for path, want := range map[string]int{"/healthz": 200, "/readyz": tc.code} {
				res, err := http.Get(srv.URL + path)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != want || (path == "/readyz" && !strings.Contains(string(body), tc.says)) {
					t.Errorf("%s: %d %q, want %d saying %q", path, res.StatusCode, body, want, tc.says)
				}
			}
		})
	}
}
