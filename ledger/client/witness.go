package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// witness is a witness a client requires (WithWitness).
type witness struct {
	base *url.URL
	id   *verify.Witness
}

// WithWitness makes Verify accept a checkpoint only once the witness at
// baseURL, with verifier key vkey (verify.Witness.VerifierKey), cosigned
// it — or cosigned a later checkpoint the ledger proves consistent with
// it. A checkpoint the witness refuses is a split view: the ledger showed
// this client a history the witness was not shown. Errors from New name a
// bad URL or key.
func WithWitness(baseURL, vkey string) Option {
	return func(c *Client) {
		id, err := verify.ParseWitnessKey(vkey)
		u, uerr := url.Parse(baseURL)
		if err != nil || uerr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			c.optErr = fmt.Errorf("witness %q %q: want an http(s) URL and a witness verifier key", baseURL, vkey)
			return
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		c.witness = &witness{base: u, id: id}
	}
}

// AddCheckpointBody is the body of a witness's POST /add-checkpoint (C2SP
// tlog-witness): the size the submitter believes the witness has, the
// consistency proof from it, a blank line, the signed checkpoint.
func AddCheckpointBody(old uint64, proof *verify.ConsistencyProof, note []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "old %d\n", old)
	if proof != nil {
		for _, h := range proof.Hashes {
			b.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
		}
	}
	b.WriteString("\n")
	b.Write(note)
	return b.Bytes()
}

func (c *Client) witnessDo(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	u := *c.witness.base
	u.Path += path
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("witness %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxCheckpointText+1))
	if err != nil || len(b) > maxCheckpointText {
		return 0, nil, fmt.Errorf("witness %s %s: unreadable or oversized answer", method, path)
	}
	return resp.StatusCode, b, nil
}

// witnessCosign gets the required witness's cosignature on cp (opened
// under m) and returns the note with it.
func (c *Client) witnessCosign(ctx context.Context, cp *verify.Checkpoint, m *Membership) ([]byte, error) {
	w := c.witness
	old := uint64(0)
	for range 3 {
		if old > cp.Size {
			// The witness is ahead: its cosigned checkpoint must extend ours.
			status, wn, err := c.witnessDo(ctx, "GET", "/checkpoint", nil)
			if err != nil {
				return nil, err
			}
			if status != http.StatusOK {
				return nil, fmt.Errorf("witness %s: GET /checkpoint: status %d", w.id.Name, status)
			}
			if _, err := verify.CheckCosignature(wn, w.id); err != nil {
				return nil, err
			}
			wcp, err := openUnder(wn, m)
			if err != nil {
				return nil, err
			}
			p, err := c.ConsistencyProof(ctx, cp.Size, wcp.Size)
			if err != nil {
				return nil, err
			}
			if err := verify.CheckConsistency(p, cp, wcp); err != nil {
				return nil, verr(verify.ErrWitness, "the checkpoint of size %d is not a prefix of the one witness %s cosigned at size %d: a split view (%v)", cp.Size, w.id.Name, wcp.Size, err)
			}
			return cp.Note, nil
		}
		var proof *verify.ConsistencyProof
		if old > 0 && old < cp.Size {
			var err error
			if proof, err = c.ConsistencyProof(ctx, old, cp.Size); err != nil {
				return nil, err
			}
		}
		status, body, err := c.witnessDo(ctx, "POST", "/add-checkpoint", AddCheckpointBody(old, proof, cp.Note))
		if err != nil {
			return nil, err
		}
		switch status {
		case http.StatusOK:
			note := verify.AddCosignature(cp.Note, body)
			if _, err := verify.CheckCosignature(note, w.id); err != nil {
				return nil, err
			}
			return note, nil
		case http.StatusConflict:
			n, err := strconv.ParseUint(strings.TrimSpace(string(body)), 10, 63)
			if err != nil {
				return nil, fmt.Errorf("witness %s: 409 without a size", w.id.Name)
			}
			old = n
		case http.StatusUnprocessableEntity:
			return nil, verr(verify.ErrWitness, "witness %s refuses the checkpoint of size %d: %s — the ledger showed this client a history the witness was not shown (a fork)", w.id.Name, cp.Size, sanitize(strings.TrimSpace(string(body))))
		default:
			return nil, verr(verify.ErrWitness, "witness %s: add-checkpoint: status %d: %s", w.id.Name, status, sanitize(strings.TrimSpace(string(body))))
		}
	}
	return nil, fmt.Errorf("witness %s: its size kept changing", w.id.Name)
}
