package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// Client is an HTTP client of one ledger API endpoint (a validator's
// `cloister ledger start`, or an embedded ledger's handler). It is safe for
// concurrent use.
type Client struct {
	base    *url.URL
	hc      *http.Client
	genesis string      // the genesis hash Verify pins, if given
	witness *witness    // a witness Verify requires, if given
	sigs    *sigCache   // entries whose signatures verified, if kept (WithSignatureCache)
	models  *modelCache // decoded model entries (models.go)
	optErr  error
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client use hc (for TLS settings, proxies,
// timeouts). The default has a 2-minute overall timeout per request,
// longer than the server's 30 s commit wait.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithGenesis makes Verify trust only the ledger whose genesis has this
// hash (verify.Genesis.Hash, lower-case hex): no trust on first use.
func WithGenesis(hash string) Option { return func(c *Client) { c.genesis = hash } }

// New returns a client of the ledger API at baseURL (http or https, e.g.
// "http://127.0.0.1:26680"). It does not contact the server.
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("ledger URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("ledger URL %q: want http://HOST:PORT or https://HOST:PORT", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("ledger URL %q: must not carry a query, fragment or user info", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	c := &Client{base: u, hc: &http.Client{Timeout: 2 * time.Minute}, models: &modelCache{}}
	for _, o := range opts {
		o(c)
	}
	if c.optErr != nil {
		return nil, c.optErr
	}
	return c, nil
}

// URL returns the base URL the client talks to.
func (c *Client) URL() string { return c.base.String() }

// Response size bounds. Each is well above what an honest server sends for
// the largest legal answer, so that a hostile one cannot make the client
// buffer without limit.
const (
	maxEntryJSON      = 64<<10*2 + 1024 // one entry (≤ 64 KiB, base64/escapes at most double it) plus framing
	maxSmallResponse  = 16 << 10        // receipts, proofs, status, errors
	maxCheckpointText = 64 << 10        // ≤ 100 signature lines
	maxValidatorsJSON = 256 << 10       // ≤ verify.MaxValidators validators
	maxPageEntries    = 1000
)

// do sends one request and returns the body of a 200 response, at most
// limit bytes. Non-200 responses become an *APIError, or, when refusal is
// set and the code is a state-machine refusal, a *verify.RejectedError.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body []byte, limit int64, refusal bool) ([]byte, error) {
	u := *c.base
	u.Path = c.base.Path + path
	if query != nil {
		u.RawQuery = query.Encode()
	}
	op := method + " " + path
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("ledger %s: %w", op, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ledger %s: %w", op, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxSmallResponse))
		return nil, parseErrorResponse(op, resp.StatusCode, b, refusal)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("ledger %s: reading response: %w", op, err)
	}
	if int64(len(b)) > limit {
		return nil, malformed("%s: response larger than %d bytes", op, limit)
	}
	return b, nil
}

// parseErrorResponse turns an error body {"error": ..., "code": ...} into
// an error. The body is untrusted text: it is sanitised before it is shown.
func parseErrorResponse(op string, status int, body []byte, refusal bool) error {
	var e struct {
		Error     string  `json:"error"`
		Code      string  `json:"code"`
		HeldBy    *uint64 `json:"held_by"`
		SameEntry bool    `json:"same_entry"`
	}
	if json.Unmarshal(body, &e) != nil {
		e.Error, e.Code = "", ""
		if s := strings.TrimSpace(string(body)); s != "" {
			e.Error = s
		}
	}
	if !validCode(e.Code) {
		e.Code = ""
	}
	reason := sanitize(e.Error)
	if refusal && isRefusal(e.Code) && status >= 400 && status < 500 {
		if reason == "" {
			reason = "refused (" + e.Code + ")"
		}
		rej := &verify.RejectedError{Code: e.Code, Reason: reason}
		if e.Code == verify.CodeReplay {
			rej.HeldBy, rej.SameEntry = e.HeldBy, e.SameEntry
		}
		return rej
	}
	return &APIError{Op: op, Status: status, Code: e.Code, Message: reason}
}

// decodeStrict decodes one JSON value into v, refusing trailing data.
// Unknown fields are allowed: a newer server may add some.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}
