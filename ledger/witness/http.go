package witness

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// maxAddBody bounds POST /add-checkpoint: a checkpoint and a consistency
// proof of at most 63 hashes.
const maxAddBody = verify.MaxCheckpointBytes + 64*50 + 64

// Handler serves the witness's HTTP API:
//
//	POST /add-checkpoint  C2SP tlog-witness: "old N\n", the consistency
//	                      proof from N (base64 hashes, one a line), a blank
//	                      line, the signed checkpoint. 200: the cosignature
//	                      line; 409 (text/x.tlog.size): the witness's size;
//	                      422: not consistent — a fork, kept as evidence;
//	                      403: not signed by the ledger's validators.
//	GET  /checkpoint      the latest cosigned checkpoint
//	GET  /forks           the fork evidence kept (JSON array)
func (w *Witness) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /add-checkpoint", w.handleAdd)
	mux.HandleFunc("GET /checkpoint", func(rw http.ResponseWriter, r *http.Request) {
		b := w.Latest()
		if b == nil {
			http.Error(rw, "no checkpoint cosigned yet", http.StatusNotFound)
			return
		}
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rw.Write(b)
	})
	mux.HandleFunc("GET /forks", w.handleForks)
	return mux
}

func (w *Witness) handleAdd(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, maxAddBody))
	if err != nil {
		http.Error(rw, fmt.Sprintf("request body: %v (limit %d bytes)", err, maxAddBody), http.StatusRequestEntityTooLarge)
		return
	}
	old, proof, note, err := parseAdd(body)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	st, err := client.LoadState(w.path("ledger.json"))
	if err != nil || st == nil {
		http.Error(rw, "the witness has not followed the ledger yet", http.StatusServiceUnavailable)
		return
	}
	cp, err := st.OpenCheckpoint(note)
	if err != nil {
		http.Error(rw, "checkpoint: "+err.Error(), http.StatusForbidden)
		return
	}
	if old > cp.Size {
		http.Error(rw, fmt.Sprintf("old size %d is larger than the checkpoint's %d", old, cp.Size), http.StatusBadRequest)
		return
	}
	var p *verify.ConsistencyProof
	if old > 0 && old < cp.Size {
		p = &verify.ConsistencyProof{From: old, To: cp.Size, Hashes: proof}
	}
	line, err := w.Add(r.Context(), old, cp, p)
	var conflict *ErrConflict
	switch {
	case errors.As(err, &conflict):
		rw.Header().Set("Content-Type", "text/x.tlog.size")
		rw.WriteHeader(http.StatusConflict)
		fmt.Fprintf(rw, "%d\n", conflict.Size)
	case errors.Is(err, verify.ErrInconsistent), errors.Is(err, verify.ErrRewound):
		http.Error(rw, err.Error(), http.StatusUnprocessableEntity)
	case err != nil:
		http.Error(rw, err.Error(), http.StatusBadRequest)
	default:
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rw.Write(line)
	}
}

// parseAdd reads an add-checkpoint body.
func parseAdd(body []byte) (old uint64, proof [][32]byte, note []byte, err error) {
	br := bufio.NewReader(bytes.NewReader(body))
	first, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(first, "old ") {
		return 0, nil, nil, errors.New(`add-checkpoint: the body starts with "old <size>\n"`)
	}
	if old, err = strconv.ParseUint(strings.TrimSuffix(first[4:], "\n"), 10, 63); err != nil {
		return 0, nil, nil, errors.New("add-checkpoint: old size is not a decimal number")
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return 0, nil, nil, errors.New("add-checkpoint: no blank line before the checkpoint")
		}
		if line == "\n" {
			break
		}
		h, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSuffix(line, "\n"))
		if err != nil || len(h) != 32 || len(proof) >= 63 {
			return 0, nil, nil, errors.New("add-checkpoint: a proof line is not base64 of 32 bytes, or there are more than 63")
		}
		proof = append(proof, [32]byte(h))
	}
	note, _ = io.ReadAll(br)
	return old, proof, note, nil
}

func (w *Witness) handleForks(rw http.ResponseWriter, _ *http.Request) {
	entries, _ := os.ReadDir(w.path("forks"))
	out := []json.RawMessage{}
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(w.path("forks"), e.Name())); err == nil && json.Valid(b) {
			out = append(out, b)
		}
	}
	rw.Header().Set("Content-Type", "application/json")
	json.NewEncoder(rw).Encode(out)
}
