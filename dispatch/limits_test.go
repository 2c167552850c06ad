package dispatch

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/acl"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/deal"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/policy"
)

// Requests are bounded before any work: the body's size, its signature
// and form, the listing, then the limits in total and per consumer, named
// in the refusal; the ledger is asked only after.
func TestSubmitLimits(t *testing.T) {
	lc, err := lclient.New("http://127.0.0.1:1") // never reached: every case is refused first
	if err != nil {
		t.Fatal(err)
	}
	owner, _ := keys.Generate()
	disp, _ := keys.Generate()
	lst := Listing{Name: "p.wasm", SHA256: strings.Repeat("01", 32), Outputs: []string{"out"},
		Sealed: policy.SealedProgram{Digest: "sha256:" + strings.Repeat("02", 32), Owner: owner.Public().SigningString()}}
	d, err := New(Options{Ledger: lc, Key: disp.Signer(), Programs: []Listing{lst}, MaxOpen: 2, MaxPerConsumer: 1})
	if err != nil {
		t.Fatal(err)
	}
	h := d.Handler()
	post := func(body []byte) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/requests", bytes.NewReader(body)))
		return rec.Code, rec.Body.String()
	}
	entry := func(k *keys.PrivateKey, mut func(*deal.Request)) []byte {
		id := make([]byte, 32)
		rand.Read(id)
		r := deal.Request{ID: hex.EncodeToString(id), ProgramSHA256: lst.SHA256, Sealed: lst.Sealed.Digest, Requirement: "class == 'software'",
			Inputs: []string{"in"}, Deadline: acl.FormatTime(time.Now().Add(time.Minute)), SealingKey: k.Public().SealingString()}
		if mut != nil {
			mut(&r)
		}
		se, err := verify.NewEntry(k.Signer(), deal.KindRequest, r)
		if err != nil {
			t.Fatal(err)
		}
		return se.Encode()
	}
	a, _ := keys.Generate()
	b, _ := keys.Generate()
	c, _ := keys.Generate()
	bad := entry(a, nil)
	bad[len(bad)/2] ^= 1
	for _, tc := range []struct {
		body []byte
		code int
		want string
	}{
		{bytes.Repeat([]byte("x"), maxRequestBody+1), 413, "more than"},
		{bad, 400, "request entry"},
		{entry(a, func(r *deal.Request) { r.Requirement = "memory >" }), 400, "requirement"},
		{entry(a, func(r *deal.Request) { r.Sealed = "sha256:" + strings.Repeat("03", 32) }), 404, "lists no sealed program"},
	} {
		if code, body := post(tc.body); code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("got %d %s, want %d naming %q", code, body, tc.code, tc.want)
		}
	}
	// The limits: a's first request is driven, its second refused; b's
	// fills the dispatcher; c is refused by the total.
	if !d.drive(strings.Repeat("0a", 32), a.Public().SigningString()) {
		t.Fatal("the first request was refused")
	}
	if code, body := post(entry(a, nil)); code != 429 || !strings.Contains(body, "limit per consumer") {
		t.Errorf("a second request of one consumer: %d %s", code, body)
	}
	if !d.drive(strings.Repeat("0b", 32), b.Public().SigningString()) {
		t.Fatal("another consumer's request was refused")
	}
	if code, body := post(entry(c, nil)); code != 429 || !strings.Contains(body, "--max-open") {
		t.Errorf("beyond the total: %d %s", code, body)
	}
}
