package ledger

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cloisterhq/cloister/jcs"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// The HTTP API of a validator (and of the embedded ledger), as in the
// ledger contract: JSON bodies, errors as {"error": reason, "code": code}.

const (
	appendWait     = 30 * time.Second
	maxBatchBytes  = 8 << 20
	maxBatchItems  = 1000
	maxListLimit   = 1000
	defaultListLen = 100
	// maxListBytes bounds the entries one GET /v1/entries returns (the
	// response is built in memory): a page stops before the entry that
	// would take it past this, so that a thousand large entries cannot
	// make one request cost 64 MiB. Clients continue from the next index.
	maxListBytes = 4 << 20
)

type receiptJSON struct {
	Index    uint64 `json:"index"`
	Height   int64  `json:"height"`
	LeafHash []byte `json:"leaf_hash"`
	// Pending marks a batch result returned before commit (?wait=false):
	// index and height are not known yet.
	Pending bool `json:"pending,omitempty"`
}

type errorJSON struct {
	Error string `json:"error"`
	Code  string `json:"code"`
	// For a replay of a committed entry (RejectedError.Index, SameEntry).
	HeldBy    *uint64 `json:"held_by,omitempty"`
	SameEntry bool    `json:"same_entry,omitempty"`
}

type entryJSON struct {
	Index    uint64          `json:"index"`
	Height   int64           `json:"height"`
	LeafHash []byte          `json:"leaf_hash"`
	Entry    json.RawMessage `json:"entry"`
}

func (ln *ledgerNode) handler() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/entries", ln.handleAppend)
	mux.HandleFunc("POST /v1/entries/batch", ln.handleBatch)
	mux.HandleFunc("GET /v1/entries/{index}", ln.handleEntry)
	mux.HandleFunc("GET /v1/entries", ln.handleEntries)
	mux.HandleFunc("GET /v1/checkpoint", ln.handleCheckpoint)
	mux.HandleFunc("GET /v1/proof/inclusion", ln.handleInclusion)
	mux.HandleFunc("GET /v1/proof/consistency", ln.handleConsistency)
	mux.HandleFunc("GET /v1/validators", ln.handleValidators)
	mux.HandleFunc("GET /v1/validators/changes", ln.handleValidatorChanges)
	mux.HandleFunc("GET /v1/genesis", ln.handleGenesis)
	mux.HandleFunc("GET /v1/light/{height}", ln.handleLight)
	mux.HandleFunc("GET /v1/status", ln.handleStatus)
	mux.HandleFunc("GET /v1/members/{key}", ln.handleMember)
	mux.HandleFunc("GET /v1/keys/{key}", ln.handleKeys)
	mux.HandleFunc("GET /v1/offers", ln.handleOffers)
	mux.HandleFunc("GET /v1/market/requests/{id}", ln.handleMarketRequest)
	mux.HandleFunc("GET /v1/market/records", ln.handleMarketRecords)
	mux.HandleFunc("GET /v1/market/open", ln.handleMarketOpen)
	mux.HandleFunc("GET /v1/models", ln.handleModels)
	mux.HandleFunc("GET /v1/workflows/{id}", ln.handleWorkflow)
	mux.HandleFunc("GET /v1/reference-values/{class}", ln.handleReferenceValues)
	mux.HandleFunc("GET /v1/piee/operators", ln.handlePieeOperators)
	mux.HandleFunc("GET /v1/piee/epochs/{n}", ln.handlePieeEpoch)
	mux.HandleFunc("GET /v1/piee/scores", ln.handlePieeScores)
	mux.HandleFunc("GET /v1/replicas/{set}", ln.handleReplicaSet)
	mux.HandleFunc("GET /healthz", ln.handleHealthz)
	mux.HandleFunc("GET /readyz", ln.handleReadyz)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, verify.CodeNotFound, "no endpoint %s %s; see GET /v1/status, /v1/entries, /v1/checkpoint, /v1/proof/..., /v1/validators", r.Method, r.URL.Path)
	})
	return mux
}

// writeJSON writes v without HTML escaping: entries are served as raw
// JSON (their exact signed bytes), which json.Marshal would rewrite
// (<, >, & and U+2028/U+2029 as \u escapes), breaking their leaf hash.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		writeError(w, http.StatusInternalServerError, verify.CodeUnavailable, "encoding the response: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func writeError(w http.ResponseWriter, status int, code, format string, args ...any) {
	b, _ := json.Marshal(errorJSON{Error: fmt.Sprintf(format, args...), Code: code})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// errorResult maps an Append error to a status and the error body.
func errorResult(err error) (int, errorJSON) {
	var rej *verify.RejectedError
	switch {
	case errors.As(err, &rej):
		status := http.StatusUnprocessableEntity
		switch rej.Code {
		case verify.CodeTooLarge:
			status = http.StatusRequestEntityTooLarge
		case verify.CodeUnavailable:
			status = http.StatusServiceUnavailable
		}
		return status, errorJSON{Error: rej.Reason, Code: rej.Code, HeldBy: rej.HeldBy, SameEntry: rej.SameEntry}
	case errors.Is(err, verify.ErrUnavailable):
		return http.StatusServiceUnavailable, errorJSON{Error: err.Error(), Code: verify.CodeUnavailable}
	default:
		return http.StatusServiceUnavailable, errorJSON{Error: err.Error(), Code: verify.CodeUnavailable}
	}
}

// readBody reads at most limit bytes, answering 413 beyond.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, what string) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, verify.CodeTooLarge, "%s is larger than %d bytes", what, limit)
		} else {
			writeError(w, http.StatusBadRequest, verify.CodeMalformed, "reading %s: %v", what, err)
		}
		return nil, false
	}
	return b, true
}

func (ln *ledgerNode) handleAppend(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, verify.MaxEntryBytes, "the entry")
	if !ok {
		return
	}
	if _, err := verify.DecodeEntry(body); err != nil {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "%v", err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), appendWait)
	defer cancel()
	rc, err := ln.submit(ctx, body) // DecodeEntry accepts canonical bytes only
	if err != nil {
		status, e := errorResult(err)
		writeJSON(w, status, e)
		return
	}
	writeJSON(w, http.StatusOK, receiptJSON{Index: rc.Index, Height: rc.Height, LeafHash: rc.LeafHash[:]})
}

// parseBatch reads {"entries":[<tx>,...]}: each element kept as the exact
// bytes of the request (they must be canonical entries themselves).
func parseBatch(body []byte) ([]json.RawMessage, error) {
	if items, ok := parseCompactBatch(body); ok {
		return items, nil
	}
	return parseBatchJSON(body)
}

// parseCompactBatch reads a batch written as clients write it:
// {"entries":[` + "`" + `{…}` + "`" + `,…]} without spaces, every element a JSON
// object. It returns ok only when parseBatchJSON would return the same
// elements and no error (FuzzBatchBody compares the two); anything else —
// spaces, other members, another spelling of "entries", a non-object
// element, invalid JSON — is left to parseBatchJSON. It is that parse in
// one pass over the body and one validity check per element, instead of
// encoding/json's two passes and copies: about half its cost.
func parseCompactBatch(body []byte) ([]json.RawMessage, bool) {
	const head, tail = `{"entries":[`, `]}`
	if len(body) < len(head)+len(tail)+2 || string(body[:len(head)]) != head || string(body[len(body)-len(tail):]) != tail {
		return nil, false
	}
	var items []json.RawMessage
	i, end := len(head), len(body)-len(tail)
	for {
		if i >= end || body[i] != '{' {
			return nil, false
		}
		j := jcs.ObjectEnd(body[:end], i)
		if j < 0 || !json.Valid(body[i:j]) {
			return nil, false
		}
		if len(items) == maxBatchItems {
			return nil, false // parseBatchJSON says how many
		}
		items = append(items, body[i:j:j])
		switch {
		case j == end:
			return items, true
		case body[j] == ',':
			i = j + 1
		default:
			return nil, false
		}
	}
}

// parseBatchJSON is parseBatch for any spelling encoding/json takes.
func parseBatchJSON(body []byte) ([]json.RawMessage, error) {
	var req struct {
		Entries []json.RawMessage `json:"entries"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf(`batch body: want {"entries":[<entry>,...]}: %v`, err)
	}
	if dec.More() {
		return nil, errors.New("batch body: trailing data after the JSON object")
	}
	if len(req.Entries) == 0 {
		return nil, errors.New(`batch body: "entries" is empty or missing`)
	}
	if len(req.Entries) > maxBatchItems {
		return nil, fmt.Errorf("batch body: %d entries, at most %d per batch", len(req.Entries), maxBatchItems)
	}
	return req.Entries, nil
}

func (ln *ledgerNode) handleBatch(w http.ResponseWriter, r *http.Request) {
	wait := true
	switch v := r.URL.Query().Get("wait"); v {
	case "", "true":
	case "false":
		wait = false
	default:
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "wait=%.20q: want true or false", v)
		return
	}
	body, ok := readBody(w, r, maxBatchBytes, "the batch")
	if !ok {
		return
	}
	txs, err := parseBatch(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "%v", err)
		return
	}
	results := make([]any, len(txs))
	pending := make([]*pendingTx, len(txs))
	defer func() {
		for _, p := range pending {
			if p != nil {
				p.release()
			}
		}
	}()
	// Check the signatures first, on every CPU; then submit in order
	// (the mempool keeps it, so a block keeps it too:
	// an entry may depend on the one before it in the batch).
	// CheckTx decodes each entry; a malformed one comes back as a
	// refusal with code malformed.
	raws := make([][]byte, len(txs))
	for i, raw := range txs {
		raws[i] = raw
	}
	ln.app.preverify(raws)
	for i, raw := range txs {
		p, err := ln.enqueue(bytes.Clone(raw), wait)
		if err != nil {
			_, e := errorResult(err)
			results[i] = e
			continue
		}
		if !wait {
			p.release()
			results[i] = receiptJSON{LeafHash: leafHashSlice(raw), Pending: true}
			continue
		}
		pending[i] = p
	}
	ctx, cancel := context.WithTimeout(r.Context(), appendWait)
	defer cancel()
	for i, p := range pending {
		if p == nil {
			continue
		}
		rc, err := p.wait(ctx)
		if err != nil {
			_, e := errorResult(err)
			results[i] = e
			continue
		}
		results[i] = receiptJSON{Index: rc.Index, Height: rc.Height, LeafHash: rc.LeafHash[:]}
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": results})
}

func leafHashSlice(tx []byte) []byte {
	h := verify.LeafHash(tx)
	return h[:]
}

// parseIndex reads a decimal uint64 parameter.
func parseIndex(s, name string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 63)
	if err != nil || strconv.FormatUint(n, 10) != s {
		return 0, fmt.Errorf("%s=%.30q: want a non-negative decimal integer", name, s)
	}
	return n, nil
}

// queryIndex reads an optional query parameter; ok=false if absent.
func queryIndex(r *http.Request, name string) (n uint64, ok bool, err error) {
	q := r.URL.Query()
	if !q.Has(name) {
		return 0, false, nil
	}
	if len(q[name]) > 1 {
		return 0, false, fmt.Errorf("%s given %d times", name, len(q[name]))
	}
	n, err = parseIndex(q.Get(name), name)
	return n, err == nil, err
}

// read runs fn in one bbolt read transaction with the committed state.
// fn's response is buffered and sent after the transaction ends: a slow
// client must not hold a read transaction open (bbolt cannot grow its
// file under one, and the next Commit would wait for the client).
func (ln *ledgerNode) read(w http.ResponseWriter, fn func(w http.ResponseWriter, r reader, st committedState) error) {
	var buf bufferedResponse
	err := ln.store.view(func(r reader) error {
		st, err := r.state()
		if err != nil {
			return err
		}
		return fn(&buf, r, st)
	})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, verify.CodeUnavailable, "reading the ledger: %v", err)
		return
	}
	for k, v := range buf.h {
		w.Header()[k] = v
	}
	w.WriteHeader(cmp.Or(buf.status, http.StatusOK))
	w.Write(buf.body.Bytes())
}

type bufferedResponse struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header {
	if b.h == nil {
		b.h = http.Header{}
	}
	return b.h
}

func (b *bufferedResponse) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}

func (ln *ledgerNode) handleEntry(w http.ResponseWriter, req *http.Request) {
	i, err := parseIndex(req.PathValue("index"), "index")
	if err != nil {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "%v", err)
		return
	}
	ln.read(w, func(w http.ResponseWriter, r reader, st committedState) error {
		h, tx, ok := r.entry(i)
		if !ok || i >= st.Size {
			writeError(w, http.StatusNotFound, verify.CodeNotFound, "entry %d does not exist; the log has %d entries", i, st.Size)
			return nil
		}
		writeJSON(w, http.StatusOK, entryJSON{Index: i, Height: h, LeafHash: leafHashSlice(tx), Entry: bytes.Clone(tx)})
		return nil
	})
}

func (ln *ledgerNode) handleEntries(w http.ResponseWriter, req *http.Request) {
	from, _, err := queryIndex(req, "from")
	if err != nil {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "%v", err)
		return
	}
	limit, ok, err := queryIndex(req, "limit")
	if err != nil {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "%v", err)
		return
	}
	if !ok {
		limit = defaultListLen
	}
	if limit == 0 || limit > maxListLimit {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "limit=%d: want 1 to %d", limit, maxListLimit)
		return
	}
	ln.read(w, func(w http.ResponseWriter, r reader, st committedState) error {
		out := struct {
			Size    uint64      `json:"size"`
			Entries []entryJSON `json:"entries"`
		}{Size: st.Size, Entries: []entryJSON{}}
		size := 0
		next := from
		bad, ok := r.entriesFrom(from, func(i uint64, e *storedEntry) bool {
			if i != next || i >= st.Size || i-from >= limit {
				return false
			}
			if size += len(e.tx); size > maxListBytes && len(out.Entries) > 0 {
				return false
			}
			out.Entries = append(out.Entries, entryJSON{Index: i, Height: e.height, LeafHash: leafHashSlice(e.tx), Entry: bytes.Clone(e.tx)})
			next++
			return true
		})
		if !ok {
			return fmt.Errorf("entry %d unreadable in the store", bad)
		}
		if next < st.Size && next-from < limit && size <= maxListBytes {
			return fmt.Errorf("entry %d missing from the store", next)
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	})
}

func (ln *ledgerNode) handleCheckpoint(w http.ResponseWriter, req *http.Request) {
	size, bySize, err := queryIndex(req, "size")
	if err != nil {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "%v", err)
		return
	}
	ln.read(w, func(w http.ResponseWriter, r reader, st committedState) error {
		if !bySize {
			if !st.HasCheckpoint {
				writeError(w, http.StatusNotFound, verify.CodeNotCheckpointed, "no cosigned checkpoint yet; the first comes two blocks after the chain starts")
				return nil
			}
			size = st.CheckpointSize
		}
		note := r.checkpoint(size)
		if note == nil {
			writeError(w, http.StatusNotFound, verify.CodeNotCheckpointed, "no cosigned checkpoint of size %d is stored (latest: %s)", size, checkpointSizeText(st))
			return nil
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(note)
		return nil
	})
}

func checkpointSizeText(st committedState) string {
	if !st.HasCheckpoint {
		return "none yet"
	}
	return strconv.FormatUint(st.CheckpointSize, 10)
}

func (ln *ledgerNode) handleInclusion(w http.ResponseWriter, req *http.Request) {
	index, ok, err := queryIndex(req, "index")
	if err == nil && !ok {
		err = errors.New("index is required")
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "%v", err)
		return
	}
	size, hasSize, err := queryIndex(req, "size")
	if err != nil {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "%v", err)
		return
	}
	ln.read(w, func(w http.ResponseWriter, r reader, st committedState) error {
		if !hasSize {
			// Default: the latest checkpoint, the tree a client can verify.
			if !st.HasCheckpoint || index >= st.CheckpointSize {
				writeError(w, http.StatusNotFound, verify.CodeNotCheckpointed, "entry %d is not covered by a cosigned checkpoint yet (latest: %s); retry shortly or name a size", index, checkpointSizeText(st))
				return nil
			}
			size = st.CheckpointSize
		}
		if size > st.Size {
			writeError(w, http.StatusNotFound, verify.CodeNotFound, "size=%d: the log has %d entries", size, st.Size)
			return nil
		}
		if index >= size {
			writeError(w, http.StatusBadRequest, verify.CodeMalformed, "index=%d is not below size=%d", index, size)
			return nil
		}
		_, tx, ok := r.entry(index)
		if !ok {
			return fmt.Errorf("entry %d missing from the store", index)
		}
		proof, err := tlog.ProveRecord(int64(size), int64(index), r.hashes())
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"index": index, "size": size, "leaf_hash": leafHashSlice(tx), "hashes": hashList(proof)})
		return nil
	})
}

func hashList(hs []tlog.Hash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}

func (ln *ledgerNode) handleConsistency(w http.ResponseWriter, req *http.Request) {
	var from, to uint64
	for _, p := range []struct {
		name string
		dst  *uint64
	}{{"from", &from}, {"to", &to}} {
		n, ok, err := queryIndex(req, p.name)
		if err == nil && !ok {
			err = fmt.Errorf("%s is required", p.name)
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, verify.CodeMalformed, "%v", err)
			return
		}
		*p.dst = n
	}
	if from < 1 || from > to {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "from=%d to=%d: want 1 <= from <= to (every log extends the empty one)", from, to)
		return
	}
	ln.read(w, func(w http.ResponseWriter, r reader, st committedState) error {
		if to > st.Size {
			writeError(w, http.StatusNotFound, verify.CodeNotFound, "to=%d: the log has %d entries", to, st.Size)
			return nil
		}
		proof, err := tlog.ProveTree(int64(to), int64(from), r.hashes())
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"from": from, "to": to, "hashes": hashList(proof)})
		return nil
	})
}

type validatorsJSON struct {
	ChainID    string             `json:"chain_id"`
	Origin     string             `json:"origin"`
	Validators []verify.Validator `json:"validators"`
}

func (ln *ledgerNode) handleValidators(w http.ResponseWriter, _ *http.Request) {
	_, vs := ln.app.state()
	if vs == nil {
		writeError(w, http.StatusServiceUnavailable, verify.CodeUnavailable, "the chain has not started yet")
		return
	}
	writeJSON(w, http.StatusOK, validatorsJSON{ChainID: vs.chainID, Origin: vs.origin, Validators: vs.public.Validators})
}

func (ln *ledgerNode) handleStatus(w http.ResponseWriter, _ *http.Request) {
	_, vs := ln.app.state()
	ln.read(w, func(w http.ResponseWriter, r reader, st committedState) error {
		s := statusJSON{Height: st.Height, Size: st.Size, Root: st.Root[:]}
		s.Peers, s.CatchingUp = ln.liveness()
		if vs != nil {
			s.ChainID = vs.chainID
		}
		if st.HasCheckpoint {
			s.CheckpointSize = &st.CheckpointSize
		}
		writeJSON(w, http.StatusOK, s.withRules(ln.app.schedule(), st.Height))
		return nil
	})
}
