package client

// A ledger API server for tests: a real RFC 6962 log built with
// x/mod/sumdb/tlog and checkpoints signed as notes with Ed25519 validator
// keys generated here, served over HTTP on 127.0.0.1. Knobs let a test make
// it lie in exactly one way.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/verify"
)

type testValidator struct {
	priv   ed25519.PrivateKey
	v      verify.Validator
	signer note.Signer
}

func newTestValidator(t testing.TB, chainID string, power int64) *testValidator {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(pub)
	addr := fmt.Sprintf("%X", sum[:20]) // CometBFT spells addresses in upper case
	name := chainID + "/validator-" + strings.ToLower(addr[:8])
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(vkey, "+")
	skey := "PRIVATE+KEY+" + name + "+" + parts[1] + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, priv.Seed()...))
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return &testValidator{priv: priv, v: verify.Validator{Name: name, Key: vkey, Power: power, Address: addr}, signer: signer}
}

// testLog is an in-memory tlog: the entry txs and the stored hashes.
type testLog struct {
	txs    [][]byte
	hashes []tlog.Hash
}

func (l *testLog) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x < 0 || x >= int64(len(l.hashes)) {
			return nil, fmt.Errorf("hash %d not stored", x)
		}
		out[i] = l.hashes[x]
	}
	return out, nil
}

func (l *testLog) add(t testing.TB, tx []byte) {
	t.Helper()
	hs, err := tlog.StoredHashes(int64(len(l.txs)), tx, l)
	if err != nil {
		t.Fatal(err)
	}
	l.hashes = append(l.hashes, hs...)
	l.txs = append(l.txs, tx)
}

func (l *testLog) root(t testing.TB, n int64) [32]byte {
	t.Helper()
	if n == 0 {
		return sha256.Sum256(nil)
	}
	h, err := tlog.TreeHash(n, l)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// clone returns a copy of the first n entries.
func (l *testLog) clone(t testing.TB, n int) *testLog {
	c := &testLog{}
	for _, tx := range l.txs[:n] {
		c.add(t, tx)
	}
	return c
}

type testLedger struct {
	t       testing.TB
	chainID string
	user    ed25519.PrivateKey

	mu         sync.Mutex
	vals       []*testValidator
	log        *testLog
	signers    []int  // indexes into vals that sign checkpoints (all when nil)
	origin     string // checkpoint origin; "" means the right one
	extraSigs  []note.Signer
	badSigBy   int // sign the checkpoint with a corrupted signature of vals[badSigBy-1]
	mutate     func(path string, body []byte) []byte
	nonce      uint64
	seenNonces map[string]bool
	srv        *httptest.Server
	// genesis is the set first served under the current chain id: a
	// genesis is fixed, later changes to vals make the server lie.
	genesis *verify.Genesis
}

func newTestLedger(t testing.TB, powers ...int64) *testLedger {
	t.Helper()
	if len(powers) == 0 {
		powers = []int64{10, 10, 10, 10}
	}
	_, user, _ := ed25519.GenerateKey(nil)
	tl := &testLedger{t: t, chainID: "test-chain", user: user, log: &testLog{}, seenNonces: map[string]bool{}}
	for _, p := range powers {
		tl.vals = append(tl.vals, newTestValidator(t, tl.chainID, p))
	}
	tl.srv = httptest.NewServer(http.HandlerFunc(tl.serve))
	t.Cleanup(tl.srv.Close)
	return tl
}

func (tl *testLedger) client() *Client {
	c, err := New(tl.srv.URL)
	if err != nil {
		tl.t.Fatal(err)
	}
	return c
}

// entry makes a signed note entry with text s.
func (tl *testLedger) entry(s string) *verify.SignedEntry {
	tl.mu.Lock()
	tl.nonce++
	n := tl.nonce
	tl.mu.Unlock()
	se, err := verify.NewEntryWithNonce(tl.user, ledger.KindNote, map[string]any{"text": s}, n, time.Now())
	if err != nil {
		tl.t.Fatal(err)
	}
	return se
}

// addEntries appends n note entries to the served log directly.
func (tl *testLedger) addEntries(n int, prefix string) {
	for i := 0; i < n; i++ {
		e := tl.entry(fmt.Sprintf("%s %d", prefix, i))
		tl.mu.Lock()
		tl.log.add(tl.t, e.Encode())
		tl.mu.Unlock()
	}
}

func (tl *testLedger) set(f func(tl *testLedger)) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	f(tl)
}

func (tl *testLedger) validatorSet() *verify.ValidatorSet {
	vs := &verify.ValidatorSet{ChainID: tl.chainID, Origin: verify.OriginPrefix + tl.chainID}
	for _, v := range tl.vals {
		vs.Validators = append(vs.Validators, v.v)
	}
	return vs
}

// checkpoint signs the checkpoint of the first n entries. Callers hold mu.
func (tl *testLedger) checkpoint(n int64) []byte {
	origin := tl.origin
	if origin == "" {
		origin = verify.OriginPrefix + tl.chainID
	}
	root := tl.log.root(tl.t, n)
	text := fmt.Sprintf("%s\n%d\n%s\n", origin, n, base64.StdEncoding.EncodeToString(root[:]))
	var signers []note.Signer
	if tl.signers == nil {
		for _, v := range tl.vals {
			signers = append(signers, v.signer)
		}
	} else {
		for _, i := range tl.signers {
			signers = append(signers, tl.vals[i].signer)
		}
	}
	if tl.badSigBy > 0 {
		signers = append(signers, badSigner{tl.vals[tl.badSigBy-1].signer})
	}
	signers = append(signers, tl.extraSigs...)
	msg, err := note.Sign(&note.Note{Text: text}, signers...)
	if err != nil {
		tl.t.Fatal(err)
	}
	return msg
}

// badSigner signs with the right name and key hash but a wrong signature.
type badSigner struct{ note.Signer }

func (b badSigner) Sign(msg []byte) ([]byte, error) {
	s, err := b.Signer.Sign(msg)
	s[0] ^= 1
	return s, err
}

func (tl *testLedger) serve(w http.ResponseWriter, r *http.Request) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	rec := httptest.NewRecorder()
	tl.route(rec, r)
	body := rec.Body.Bytes()
	if tl.mutate != nil && rec.Code == 200 {
		body = tl.mutate(r.URL.Path, body)
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(body)
}

func apiErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg, "code": code})
}

func b64h(h [32]byte) string { return base64.StdEncoding.EncodeToString(h[:]) }

func (tl *testLedger) entryJSON(i int64) []byte {
	tx := tl.log.txs[i]
	return fmt.Appendf(nil, `{"index":%d,"height":%d,"leaf_hash":%q,"entry":%s}`, i, i+2, b64h(verify.LeafHash(tx)), tx)
}

func (tl *testLedger) route(w http.ResponseWriter, r *http.Request) {
	size := int64(len(tl.log.txs))
	q := r.URL.Query()
	num := func(k string) (int64, bool) {
		n, err := strconv.ParseInt(q.Get(k), 10, 64)
		return n, err == nil && n >= 0
	}
	switch {
	case r.Method == "POST" && r.URL.Path == "/v1/entries":
		var buf bytes.Buffer
		buf.ReadFrom(r.Body)
		tx := buf.Bytes()
		se, err := verify.DecodeEntry(tx)
		if err != nil {
			apiErr(w, 422, "malformed", err.Error())
			return
		}
		if err := se.VerifySignature(); err != nil {
			apiErr(w, 422, "bad_signature", err.Error())
			return
		}
		key := se.Entry.Submitter + "/" + strconv.FormatUint(se.Entry.Nonce, 10)
		if tl.seenNonces[key] {
			apiErr(w, 422, "replay", "entry nonce already used by this submitter\x1b[31m")
			return
		}
		tl.seenNonces[key] = true
		tl.log.add(tl.t, tx)
		fmt.Fprintf(w, `{"index":%d,"height":%d,"leaf_hash":%q}`, size, size+2, b64h(verify.LeafHash(tx)))
	case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/v1/entries/"):
		i, err := strconv.ParseInt(strings.TrimPrefix(r.URL.Path, "/v1/entries/"), 10, 64)
		if err != nil || i < 0 || i >= size {
			apiErr(w, 404, "not_found", "no such entry")
			return
		}
		w.Write(tl.entryJSON(i))
	case r.Method == "GET" && r.URL.Path == "/v1/entries":
		from, ok1 := num("from")
		limit, ok2 := num("limit")
		if !ok1 || !ok2 || limit < 1 || limit > 1000 {
			apiErr(w, 400, "malformed", "bad from or limit")
			return
		}
		var items [][]byte
		for i := from; i < size && i < from+limit; i++ {
			items = append(items, tl.entryJSON(i))
		}
		fmt.Fprintf(w, `{"size":%d,"entries":[%s]}`, size, bytes.Join(items, []byte(",")))
	case r.URL.Path == "/v1/checkpoint":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(tl.checkpoint(size))
	case r.URL.Path == "/v1/validators":
		json.NewEncoder(w).Encode(tl.validatorSet())
	case r.URL.Path == "/v1/genesis":
		if tl.genesis == nil || tl.genesis.ChainID != tl.chainID {
			tl.genesis = &verify.Genesis{ChainID: tl.chainID, Time: "2026-01-02T03:04:05.000Z", Validators: tl.validatorSet().Validators, Threshold: verify.DefaultThreshold}
		}
		json.NewEncoder(w).Encode(tl.genesis)
	case r.URL.Path == "/v1/validators/changes":
		fmt.Fprint(w, `{"version":0,"changes":[]}`)
	case r.URL.Path == "/v1/proof/inclusion":
		i, ok1 := num("index")
		n, ok2 := num("size")
		if !ok1 || !ok2 || i >= n || n > size {
			apiErr(w, 404, "not_checkpointed", "no such proof")
			return
		}
		p, err := tlog.ProveRecord(n, i, tl.log)
		if err != nil {
			tl.t.Fatal(err)
		}
		json.NewEncoder(w).Encode(map[string]any{"index": i, "size": n, "leaf_hash": b64h(verify.LeafHash(tl.log.txs[i])), "hashes": hashList(p)})
	case r.URL.Path == "/v1/proof/consistency":
		m, ok1 := num("from")
		n, ok2 := num("to")
		if !ok1 || !ok2 || m < 1 || m > n || n > size {
			apiErr(w, 404, "not_checkpointed", "no such proof")
			return
		}
		p, err := tlog.ProveTree(n, m, tl.log)
		if err != nil {
			tl.t.Fatal(err)
		}
		json.NewEncoder(w).Encode(map[string]any{"from": m, "to": n, "hashes": hashList(p)})
	case r.URL.Path == "/v1/status":
		root := tl.log.root(tl.t, size)
		fmt.Fprintf(w, `{"chain_id":%q,"height":%d,"size":%d,"root":%q,"checkpoint_size":%d}`, tl.chainID, size+3, size, b64h(root), size)
	default:
		apiErr(w, 404, "not_found", "no route")
	}
}

func hashList[T ~[]tlog.Hash](p T) []string {
	out := make([]string, len(p))
	for i, h := range p {
		out[i] = b64h(h)
	}
	return out
}

// flipFirstHash changes one bit of the first proof hash in a proof body.
func flipFirstHash(t testing.TB) func(string, []byte) []byte {
	return func(path string, body []byte) []byte {
		if !strings.HasPrefix(path, "/v1/proof/") {
			return body
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		hs := m["hashes"].([]any)
		if len(hs) == 0 {
			t.Fatal("proof has no hashes to flip")
		}
		h, _ := base64.StdEncoding.DecodeString(hs[0].(string))
		h[7] ^= 0x20
		hs[0] = base64.StdEncoding.EncodeToString(h)
		out, _ := json.Marshal(m)
		return out
	}
}

func u64(n uint64) *uint64 { return &n }
