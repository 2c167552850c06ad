package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/verify"
)

func TestAppendGetEntriesStatus(t *testing.T) {
	t.Parallel()
	tl := newTestLedger(t)
	c := tl.client()
	ctx := context.Background()
	var sent [][]byte
	for i := range 3 {
		e := tl.entry(fmt.Sprintf("hello %d", i))
		rc, err := c.Append(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		if rc.Index != uint64(i) || rc.LeafHash != verify.LeafHash(e.Encode()) || rc.Height < 1 {
			t.Fatalf("receipt %+v", rc)
		}
		sent = append(sent, e.Encode())
	}
	e, err := c.Get(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.Tx, sent[1]) || e.Signed.Entry.Kind != ledger.KindNote || e.Index != 1 {
		t.Fatalf("entry %+v", e)
	}
	if _, err := c.Get(ctx, 3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(3) = %v, want ErrNotFound", err)
	}
	p, err := c.Entries(ctx, 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if p.Size != 3 || len(p.Entries) != 2 || !bytes.Equal(p.Entries[1].Tx, sent[2]) {
		t.Fatalf("page size %d, %d entries", p.Size, len(p.Entries))
	}
	if p, err := c.Entries(ctx, 3, 10); err != nil || len(p.Entries) != 0 {
		t.Fatalf("page past the end: %v %v", p, err)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size != 3 || st.ChainID != "test-chain" || st.Root != tl.log.root(t, 3) {
		t.Fatalf("status %+v", st)
	}
}

func TestAppendRefusalIsRejectedError(t *testing.T) {
	t.Parallel()
	tl := newTestLedger(t)
	c := tl.client()
	e := tl.entry("once")
	if _, err := c.Append(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	_, err := c.Append(context.Background(), e)
	r, ok := IsRejected(err)
	if !ok || r.Code != "replay" {
		t.Fatalf("replayed entry: %v, want a *verify.RejectedError with code replay", err)
	}
	if strings.ContainsRune(r.Reason, 0x1b) || !strings.HasPrefix(r.Reason, "entry nonce already used") {
		t.Fatalf("reason %q not sanitised", r.Reason)
	}
	bad := tl.entry("forged")
	bad.Signature[0] ^= 1
	if _, err := c.Append(context.Background(), bad); err == nil {
		t.Fatal("forged entry accepted")
	} else if r, ok := IsRejected(err); !ok || r.Code != "bad_signature" {
		t.Fatalf("forged entry: %v", err)
	}
}

// A server that answers with something other than what the API promises
// is caught before anything is returned.
func TestMalformedResponses(t *testing.T) {
	t.Parallel()
	e := newTestLedger(t).entry("x")
	tx := e.Encode()
	leaf := b64h(verify.LeafHash(tx))
	entryOK := fmt.Sprintf(`{"index":0,"height":1,"leaf_hash":%q,"entry":%s}`, leaf, tx)
	cases := []struct {
		name, path, body, want string
		call                   func(c *Client) error
	}{
		{"receipt for another entry", "/v1/entries", `{"index":0,"height":1,"leaf_hash":"` + b64h([32]byte{1}) + `"}`, "is not the hash of the entry sent",
			func(c *Client) error { _, err := c.Append(context.Background(), e); return err }},
		{"short hash", "/v1/entries/0", `{"index":0,"height":1,"leaf_hash":"AAAA","entry":` + string(tx) + `}`, "32 bytes",
			func(c *Client) error { _, err := c.Get(context.Background(), 0); return err }},
		{"wrong index", "/v1/entries/0", strings.Replace(entryOK, `"index":0`, `"index":5`, 1), "asked for entry 0, got entry 5",
			func(c *Client) error { _, err := c.Get(context.Background(), 0); return err }},
		{"non-canonical entry", "/v1/entries/0", fmt.Sprintf(`{"index":0,"height":1,"leaf_hash":%q,"entry":%s}`,
			b64h(verify.LeafHash(bytes.Replace(tx, []byte(`{"entry":`), []byte(`{"entry": `), 1))),
			bytes.Replace(tx, []byte(`{"entry":`), []byte(`{"entry": `), 1)), "not in canonical JSON form",
			func(c *Client) error { _, err := c.Get(context.Background(), 0); return err }},
		{"trailing data", "/v1/entries/0", entryOK + "{}", "trailing data",
			func(c *Client) error { _, err := c.Get(context.Background(), 0); return err }},
		{"page beyond limit", "/v1/entries", `{"size":9,"entries":[` + entryOK + `,` + entryOK + `]}`, "asked for at most 1",
			func(c *Client) error { _, err := c.Entries(context.Background(), 0, 1); return err }},
		{"page out of order", "/v1/entries", `{"size":9,"entries":[` + entryOK + `,` + entryOK + `]}`, "item 1 has index 0, want 1",
			func(c *Client) error { _, err := c.Entries(context.Background(), 0, 5); return err }},
		{"proof too long", "/v1/proof/inclusion", `{"index":0,"size":2,"leaf_hash":"` + leaf + `","hashes":[` + strings.Repeat(`"`+leaf+`",`, 64) + `"` + leaf + `"]}`, "65 hashes",
			func(c *Client) error { _, err := c.InclusionProof(context.Background(), 0, 2); return err }},
		{"consistency for other sizes", "/v1/proof/consistency", `{"from":1,"to":3,"hashes":[]}`, "asked for 2 to 3",
			func(c *Client) error { _, err := c.ConsistencyProof(context.Background(), 2, 3); return err }},
		{"oversized checkpoint", "/v1/checkpoint", strings.Repeat("x", maxCheckpointText+1), "larger than",
			func(c *Client) error { _, err := c.Checkpoint(context.Background()); return err }},
		{"checkpoint not a note", "/v1/checkpoint", "cloister.ledger/x\n1\n" + leaf + "\n", "not a signed note",
			func(c *Client) error { _, err := c.Checkpoint(context.Background()); return err }},
		{"validators with a forged address", "/v1/validators", `{"chain_id":"c","origin":"cloister.ledger/c","validators":[{"name":"c/validator-00000000","key":"c/validator-00000000+00000000+AQ==","power":1,"address":"0000000000000000000000000000000000000000"}]}`, "validator 0",
			func(c *Client) error { _, err := c.Validators(context.Background()); return err }},
		{"status root short", "/v1/status", `{"chain_id":"c","height":1,"size":1,"root":"AAAA","checkpoint_size":1}`, "32 bytes",
			func(c *Client) error { _, err := c.Status(context.Background()); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != tc.path {
					http.NotFound(w, r)
					return
				}
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			c, err := New(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			err = tc.call(c)
			if !errors.Is(err, verify.ErrMalformed) {
				t.Fatalf("error %v, want verify.ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
		})
	}
}

func TestNewRejectsBadURLs(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://x", "http://", "http://h/?a=b", "http://u:p@h"} {
		if _, err := New(u); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
	c, err := New("http://127.0.0.1:1/base/")
	if err != nil || c.URL() != "http://127.0.0.1:1/base" {
		t.Fatalf("New: %v %v", c, err)
	}
}

func TestAppendBatch(t *testing.T) {
	t.Parallel()
	var gotQuery string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotQuery = r.URL.RawQuery
		var buf bytes.Buffer
		buf.ReadFrom(r.Body)
		if !bytes.HasPrefix(buf.Bytes(), []byte(`{"entries":[{"entry":`)) {
			http.Error(w, "bad body", 400)
			return
		}
		tx := bytes.TrimSuffix(bytes.TrimPrefix(buf.Bytes(), []byte(`{"entries":[`)), []byte(`]}`))
		first := tx[:bytes.Index(tx, []byte(`"},{"entry"`))+2]
		fmt.Fprintf(w, `{"results":[{"index":4,"height":9,"leaf_hash":%q},{"error":"no\u0007pe","code":"unauthorized"},{"error":"later","code":"unavailable"}]}`,
			b64h(verify.LeafHash(first)))
	}))
	defer srv.Close()
	c, _ := New(srv.URL)
	tl := newTestLedger(t)
	res, err := c.AppendBatch(context.Background(), []*verify.SignedEntry{tl.entry("1"), tl.entry("2"), tl.entry("3")}, true)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Receipt.Index != 4 || res[0].Err != nil {
		t.Fatalf("result 0 %+v", res[0])
	}
	if r, ok := IsRejected(res[1].Err); !ok || r.Code != "unauthorized" || r.Reason != "no?pe" {
		t.Fatalf("result 1 %+v", res[1])
	}
	var ae *APIError
	if !errors.As(res[2].Err, &ae) || ae.Code != "unavailable" || !errors.Is(res[2].Err, verify.ErrUnavailable) {
		t.Fatalf("result 2 %+v", res[2])
	}
	if gotQuery != "" {
		t.Fatalf("wait=true sent query %q", gotQuery)
	}
	if _, err := c.AppendBatch(context.Background(), []*verify.SignedEntry{tl.entry("1")}, true); !errors.Is(err, verify.ErrMalformed) {
		t.Fatalf("3 results for 1 entry: %v", err)
	}
}

// TestReplayRefusalSaysWhichEntry: a replay refusal carries the entry that
// holds the nonce (index 0 included) and whether it is the same entry.
func TestReplayRefusalSaysWhichEntry(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]struct {
		held *uint64
		same bool
	}{
		`{"error":"x","code":"replay","held_by":0,"same_entry":true}`: {new(uint64), true},
		`{"error":"x","code":"replay","held_by":7}`:                   {func() *uint64 { v := uint64(7); return &v }(), false},
		`{"error":"x","code":"replay"}`:                               {nil, false},
	} {
		var rej *verify.RejectedError
		if err := parseErrorResponse("POST /v1/entries", 422, []byte(body), true); !errors.As(err, &rej) {
			t.Fatalf("%s: %v", body, err)
		}
		if (rej.HeldBy == nil) != (want.held == nil) || (rej.HeldBy != nil && *rej.HeldBy != *want.held) || rej.SameEntry != want.same {
			t.Errorf("%s: held by %v, same %v", body, rej.HeldBy, rej.SameEntry)
		}
	}
}
