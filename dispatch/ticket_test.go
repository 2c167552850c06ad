package dispatch

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/deal"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// A ticket asked with ?wait= is held back until it says something new —
// here, the request passing its deadline, seen at a recheck of the
// ledger — or the wait ends, and a wait beyond the bound is cut to it;
// without ?wait= it is answered at once.
func TestTicketLongPoll(t *testing.T) {
	ctx, lc := embeddedLedger(t, "dispatch-ticket")
	ck, _ := keys.Generate()
	idb := make([]byte, 32)
	rand.Read(idb)
	id := hex.EncodeToString(idb)
	deadline := time.Now().Add(3 * time.Second).Truncate(time.Second).Add(time.Second)
	r := deal.Request{ID: id, ProgramSHA256: strings.Repeat("01", 32), Sealed: "sha256:" + strings.Repeat("02", 32), Requirement: "class == 'software'",
		Inputs: []string{"in"}, Deadline: acl.FormatTime(deadline), SealingKey: ck.Public().SealingString()}
	se, err := verify.NewEntry(ck.Signer(), deal.KindRequest, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.Append(ctx, se); err != nil {
		t.Fatal(err)
	}
	dk, _ := keys.Generate()
	d, err := New(Options{Ledger: lc, Key: dk.Signer()})
	if err != nil {
		t.Fatal(err)
	}
	h := d.Handler()
	ask := func(query string) (Ticket, time.Duration) {
		t.Helper()
		t0 := time.Now()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/requests/"+id+query, nil))
		var tk Ticket
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &tk) != nil {
			t.Fatalf("GET %s: %d %s", query, rec.Code, rec.Body)
		}
		return tk, time.Since(t0)
	}
	if tk, took := ask(""); tk.State != "pending" || took > time.Second {
		t.Fatalf("without wait: %s after %s", tk.State, took)
	}
	if tk, took := ask("?wait=600ms&after=0"); tk.State != "pending" || took < 550*time.Millisecond || took > 3*time.Second {
		t.Fatalf("wait=600ms on a pending request: %s after %s", tk.State, took)
	}
	tk, took := ask("?wait=1h&after=0")
	if tk.State != "expired" || !time.Now().After(deadline) || took > maxTicketWait {
		t.Fatalf("waiting past the deadline: %s after %s (deadline %s)", tk.State, took, deadline)
	}
}
