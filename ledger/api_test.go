package ledger

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// TestAPI covers the HTTP API's answers and its refusals of bad input.
func TestAPI(t *testing.T) {
	e := openTestEmbedded(t, t.TempDir())
	defer e.Close()
	c := serveAPI(t, e.Handler())
	key := newTestKey(t)

	// One entry through POST /v1/entries.
	se := signEntry(t, key, KindNote, map[string]any{"x": "y"})
	status, b := c.do("POST", "/v1/entries", se.Encode())
	if status != 200 {
		t.Fatalf("POST /v1/entries: %d %s", status, b)
	}
	var rc receiptJSON
	if err := json.Unmarshal(b, &rc); err != nil || rc.Index != 0 || rc.Height < 1 || !bytes.Equal(rc.LeafHash, leafHashSlice(se.Encode())) {
		t.Fatalf("receipt %s (%v)", b, err)
	}

	// A batch: two good, one malformed, one bad signature, in order.
	// good1 holds what an HTML-escaping encoder would rewrite (<, >, &,
	// U+2028): it must be served byte for byte, or no client accepts it.
	good1, good2 := signEntry(t, key, KindNote, map[string]any{"n": 1, "markup": "<b>&\u2028</b>"}), signEntry(t, key, KindNote, map[string]any{"n": 2})
	badSig := signEntry(t, key, KindNote, map[string]any{"n": 3})
	badSig.Signature[0] ^= 1
	body := `{"entries":[` + string(good1.Encode()) + `,{"entry":{}},` + string(badSig.Encode()) + `,` + string(good2.Encode()) + `]}`
	status, b = c.do("POST", "/v1/entries/batch", []byte(body))
	if status != 200 {
		t.Fatalf("batch: %d %s", status, b)
	}
	var br struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(b, &br); err != nil || len(br.Results) != 4 {
		t.Fatalf("batch results %s", b)
	}
	if br.Results[0]["index"] != 1.0 || br.Results[1]["code"] != verify.CodeMalformed || br.Results[2]["code"] != verify.CodeBadSignature || br.Results[3]["index"] != 2.0 {
		t.Fatalf("batch results %s", b)
	}
	// wait=false: admitted, pending.
	g3 := signEntry(t, key, KindNote, map[string]any{"n": 4})
	status, b = c.do("POST", "/v1/entries/batch?wait=false", []byte(`{"entries":[`+string(g3.Encode())+`]}`))
	if status != 200 || !strings.Contains(string(b), `"pending":true`) {
		t.Fatalf("batch wait=false: %d %s", status, b)
	}
	cp := c.verifiedCheckpoint(4)

	// Reads.
	var en entryJSON
	c.getJSON("/v1/entries/1", &en)
	if !bytes.Equal(en.Entry, good1.Encode()) || en.Index != 1 {
		t.Fatalf("entry 1 = %+v", en)
	}
	var st statusJSON
	c.getJSON("/v1/status", &st)
	if st.Size != 4 || st.Height < 1 || st.CheckpointSize == nil || st.ChainID != e.ChainID() || len(st.Root) != 32 {
		t.Fatalf("status %+v", st)
	}
	if status, b := c.do("GET", "/readyz", nil); status != 200 || string(b) != "ok\n" {
		t.Fatalf("readyz: %d %s", status, b)
	}
	if status, b := c.do("GET", "/healthz", nil); status != 200 || string(b) != "ok\n" {
		t.Fatalf("healthz: %d %s", status, b)
	}
	// A block may be committed between the two reads (a pending
	// checkpoint is published by one): the height only grows.
	if es := e.Status(); es.Height < st.Height || es.Size != 4 || es.Peers != 0 || es.CatchingUp || es.ChainID != e.ChainID() {
		t.Fatalf("Status() = %+v, API %+v", es, st)
	}
	status, b = c.do("GET", "/v1/checkpoint", nil)
	if status != 200 || !strings.HasPrefix(string(b), Origin(e.ChainID())+"\n") {
		t.Fatalf("checkpoint: %d %s", status, b)
	}
	var incl map[string]any
	c.getJSON("/v1/proof/inclusion?index=2", &incl) // size defaults to the checkpoint
	if incl["size"] != float64(cp.Size) {
		t.Fatalf("inclusion without size: %v", incl)
	}
	var cons map[string]any
	c.getJSON("/v1/proof/consistency?from=4&to=4", &cons)
	if h, ok := cons["hashes"].([]any); !ok || len(h) != 0 {
		t.Fatalf("consistency from=to: %v", cons)
	}

	for _, tc := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"GET", "/v1/entries/99", "", 404, verify.CodeNotFound},
		{"GET", "/v1/entries/-1", "", 400, verify.CodeMalformed},
		{"GET", "/v1/entries/01", "", 400, verify.CodeMalformed},
		{"GET", "/v1/entries/abc", "", 400, verify.CodeMalformed},
		{"GET", "/v1/entries?limit=1001", "", 400, verify.CodeMalformed},
		{"GET", "/v1/entries?limit=0", "", 400, verify.CodeMalformed},
		{"GET", "/v1/entries?from=x", "", 400, verify.CodeMalformed},
		{"GET", "/v1/entries?from=1&from=2", "", 400, verify.CodeMalformed},
		{"GET", "/v1/checkpoint?size=999", "", 404, verify.CodeNotCheckpointed},
		{"GET", "/v1/checkpoint?size=z", "", 400, verify.CodeMalformed},
		{"GET", "/v1/proof/inclusion", "", 400, verify.CodeMalformed},
		{"GET", "/v1/proof/inclusion?index=4&size=4", "", 400, verify.CodeMalformed},
		{"GET", "/v1/proof/inclusion?index=1&size=5", "", 404, verify.CodeNotFound},
		{"GET", "/v1/proof/inclusion?index=9", "", 404, verify.CodeNotCheckpointed},
		{"GET", "/v1/proof/consistency?from=0&to=2", "", 400, verify.CodeMalformed},
		{"GET", "/v1/proof/consistency?from=3&to=2", "", 400, verify.CodeMalformed},
		{"GET", "/v1/proof/consistency?from=1&to=9", "", 404, verify.CodeNotFound},
		{"GET", "/v1/proof/consistency?to=2", "", 400, verify.CodeMalformed},
		{"POST", "/v1/entries", "not json", 400, verify.CodeMalformed},
		{"POST", "/v1/entries/batch", `{"entries":[]}`, 400, verify.CodeMalformed},
		{"POST", "/v1/entries/batch", `{"entries":[{}],"more":1}`, 400, verify.CodeMalformed},
		{"POST", "/v1/entries/batch", `{"entries":[{}]} x`, 400, verify.CodeMalformed},
		{"POST", "/v1/entries/batch?wait=maybe", `{"entries":[{}]}`, 400, verify.CodeMalformed},
		{"POST", "/v1/entries/batch", `{"entries":[` + strings.Repeat(`{},`, maxBatchItems) + `{}]}`, 400, verify.CodeMalformed},
		{"POST", "/v1/entries/batch", `{"entries":["` + strings.Repeat("x", maxBatchBytes) + `"]}`, 413, verify.CodeTooLarge},
		{"DELETE", "/v1/entries/1", "", 404, verify.CodeNotFound},
		{"GET", "/v2/anything", "", 404, verify.CodeNotFound},
	} {
		status, b := c.do(tc.method, tc.path, []byte(tc.body))
		t.Run(fmt.Sprintf("%s %.60s", tc.method, tc.path), func(t *testing.T) { wantError(t, status, b, tc.status, tc.code) })
	}
}

// A page of GET /v1/entries stops at maxListBytes, whatever the limit
// asked: a thousand large entries cannot make one request cost 64 MiB.
func TestAPIEntriesPageBytes(t *testing.T) {
	e := openTestEmbedded(t, t.TempDir())
	defer e.Close()
	c := serveAPI(t, e.Handler())
	key := newTestKey(t)
	pad := strings.Repeat("x", 60<<10)
	var batch []string
	const n = 80 // 80 × ~60 KiB ≈ 4.7 MiB > maxListBytes
	for i := 0; i < n; i++ {
		batch = append(batch, string(signEntry(t, key, KindNote, map[string]any{"n": i, "pad": pad}).Encode()))
	}
	for i := 0; i < n; i += 20 {
		status, b := c.do("POST", "/v1/entries/batch", []byte(`{"entries":[`+strings.Join(batch[i:i+20], ",")+`]}`))
		if status != 200 || strings.Contains(string(b), `"code"`) {
			t.Fatalf("batch: %d %.300s", status, b)
		}
	}
	var page struct {
		Size    uint64      `json:"size"`
		Entries []entryJSON `json:"entries"`
	}
	status, b := c.do("GET", "/v1/entries?from=0&limit=1000", nil)
	if status != 200 {
		t.Fatalf("GET entries: %d %.300s", status, b)
	}
	if err := json.Unmarshal(b, &page); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, en := range page.Entries {
		total += len(en.Entry)
	}
	if page.Size != n || len(page.Entries) == 0 || len(page.Entries) >= n || total > maxListBytes {
		t.Fatalf("page of %d entries (%d bytes) of %d; want fewer than %d, at most %d bytes", len(page.Entries), total, page.Size, n, maxListBytes)
	}
	// The rest follows from the next index.
	next := fmt.Sprintf("/v1/entries?from=%d&limit=1000", len(page.Entries))
	var rest struct {
		Entries []entryJSON `json:"entries"`
	}
	c.getJSON(next, &rest)
	if len(rest.Entries) == 0 || rest.Entries[0].Index != uint64(len(page.Entries)) {
		t.Fatalf("next page starts at %v", rest.Entries)
	}
}
