package client

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// FuzzParseResponses feeds one byte string to every parser of server
// responses (and of the state file, which is only as trustworthy as the
// disk). None may panic, and whatever one accepts must satisfy the checks
// its callers rely on.
func FuzzParseResponses(f *testing.F) {
	tl := newTestLedger(f, 1, 2, 3)
	tl.addEntries(5, "seed")
	for _, target := range []string{"/v1/entries/2", "/v1/entries?from=1&limit=3", "/v1/checkpoint", "/v1/validators",
		"/v1/proof/inclusion?index=2&size=5", "/v1/proof/consistency?from=2&to=5", "/v1/status", "/v1/entries/99"} {
		rec := httptest.NewRecorder()
		tl.mu.Lock()
		tl.route(rec, httptest.NewRequest("GET", target, nil))
		tl.mu.Unlock()
		f.Add(rec.Body.Bytes())
	}
	e := tl.entry("receipt")
	f.Add(append([]byte(`{"index":0,"height":1,"leaf_hash":"`+b64h(verify.LeafHash(e.Encode()))+`"}`), e.Encode()...))
	f.Add([]byte(`{"results":[{"error":"x","code":"replay"},{"index":1,"height":2,"leaf_hash":"AAAA"}]}`))
	f.Add([]byte(`{"version":1,"origin":"cloister.ledger/c","validator_set":{},"checkpoint":""}`))

	vs := tl.validatorSet()
	f.Fuzz(func(t *testing.T, b []byte) {
		if e, err := parseEntry(b, 2); err == nil {
			if verify.LeafHash(e.Tx) != e.LeafHash || !bytes.Equal(e.Signed.Encode(), e.Tx) || e.Index != 2 {
				t.Fatalf("accepted entry whose bytes do not match its leaf hash or canonical form")
			}
		}
		if p, err := parsePage(b, 1, 3); err == nil {
			if len(p.Entries) > 3 {
				t.Fatal("page longer than the limit")
			}
			for i, e := range p.Entries {
				if e.Index != uint64(1+i) || e.Index >= p.Size || verify.LeafHash(e.Tx) != e.LeafHash {
					t.Fatalf("page entry %d inconsistent", i)
				}
			}
		}
		if c, err := verify.ParseCheckpointNote(b); err == nil {
			if c.Origin == "" || c.Size > maxTreeSize || (c.Size == 0 && c.Root != verify.EmptyRoot) {
				t.Fatalf("accepted checkpoint %+v", c)
			}
		}
		if c, err := verify.OpenCheckpoint(b, vs); err == nil {
			if !verify.Quorum(c.SignedPower, c.TotalPower) || c.Origin != vs.Origin {
				t.Fatal("verified a checkpoint without quorum or with another origin")
			}
		}
		if v, err := parseValidators(b); err == nil {
			if v.Check() != nil || len(v.Validators) == 0 || v.TotalPower() > verify.MaxTotalPower {
				t.Fatal("accepted a validator set that does not check")
			}
		}
		if p, err := parseInclusion(b, 2, 5); err == nil && (p.Index != 2 || p.Size != 5 || len(p.Hashes) > maxInclusionHashes) {
			t.Fatal("accepted an inclusion proof for something else")
		}
		if p, err := parseConsistency(b, 2, 5); err == nil && (p.From != 2 || p.To != 5 || len(p.Hashes) > maxConsistencyHashes) {
			t.Fatal("accepted a consistency proof for something else")
		}
		if s, err := parseStatus(b); err == nil && (s.CheckpointSize > s.Size || s.Height < 0) {
			t.Fatal("accepted an inconsistent status")
		}
		_, _ = parseReceipt(b, e.Encode())
		txs := [][]byte{e.Encode(), e.Encode()}
		if rs, err := parseBatch(b, txs, true); err == nil && len(rs) != len(txs) {
			t.Fatal("batch results do not match the entries sent")
		}
		if s, err := parseState(b); err == nil {
			if _, err := s.TrustedCheckpoint(); err != nil {
				t.Fatal("accepted a state whose checkpoint does not verify")
			}
		}
		for _, refusal := range []bool{false, true} {
			msg := parseErrorResponse("GET /x", 422, b, refusal).Error()
			if strings.IndexFunc(msg, func(r rune) bool { return unicode.IsControl(r) }) >= 0 {
				t.Fatalf("error message carries control characters: %q", msg)
			}
		}
	})
}
