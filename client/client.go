package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"connectrpc.com/connect"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/cloister/v1/cloisterv1connect"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/policy"
)

// Errors callers tell apart with errors.Is.
var (
	// ErrPolicyMismatch: the session runs under a policy whose hash differs
	// from the caller's.
	ErrPolicyMismatch = errors.New("policy hash mismatch")
	// ErrAttestation: the evidence did not verify or did not match this
	// session; the wrapped error says which check failed.
	ErrAttestation = errors.New("attestation failed")
	// ErrNodeIdentity: the node's TLS certificate is not certified by any
	// platform key the caller trusts.
	ErrNodeIdentity = errors.New("node identity not verified")
	// ErrNotPrincipal: the key given is not a principal of the policy.
	ErrNotPrincipal = errors.New("key is not a principal of the policy")
	// ErrPolicyExpired: the caller's policy has expired, so it allows
	// nothing but closing; nothing was sent.
	ErrPolicyExpired = errors.New("policy expired")
)

// Status is a session's state as the node reports it.
type Status = cloisterv1.GetStatusResponse

// Option adjusts a Client.
type Option func(*Client)

// WithPlatformKeys makes the client check that the node's TLS certificate
// is certified by one of these platform keys before creating sessions or
// reading status. Without it, those two calls are not authenticated (they
// carry nothing secret; everything that does goes through Attest).
func WithPlatformKeys(keys ...ed25519.PublicKey) Option {
	return func(c *Client) { c.platformKeys = append(c.platformKeys, keys...) }
}

// WithCreator makes CreateSession sign its requests with key: the node
// admits creators by their key (allow-list, token or consortium mode) and
// counts each creator's sessions against its quotas. Without it, requests
// are unsigned, which only a node in open mode accepts.
func WithCreator(key *keys.PrivateKey) Option { return func(c *Client) { c.creator = key } }

// WithAdmissionToken sends an operator-signed admission token with each
// CreateSession, for nodes in token mode (it must admit the WithCreator
// key).
func WithAdmissionToken(token string) Option { return func(c *Client) { c.token = token } }

// WithClock sets the clock used to verify evidence and date requests.
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// WithDialer sets how TCP connections are made (tests, proxies).
func WithDialer(d func(ctx context.Context, network, addr string) (net.Conn, error)) Option {
	return func(c *Client) { c.dial = d }
}

// Client talks to one node.
type Client struct {
	base         string // https://host:port
	platformKeys []ed25519.PublicKey
	creator      *keys.PrivateKey
	token        string
	now          func() time.Time
	dial         func(ctx context.Context, network, addr string) (net.Conn, error)

	nodeHTTP *http.Client
	node     cloisterv1connect.NodeServiceClient
	// tlsSessions lets a second Attest of the same session (another
	// principal in this process) resume the TLS session instead of a full
	// handshake. Tickets are per server name, that is per session, and a
	// resumed connection still goes through the SPKI pin.
	tlsSessions tls.ClientSessionCache

	mu     sync.Mutex
	hashes map[[32]byte]parsedDoc // by SHA-256 of a policy document
}

// parsedDoc is what CreateSession needs of a policy document.
type parsedDoc struct {
	hash    [32]byte
	name    string
	expires time.Time
}

// Dial prepares a client for the node at nodeURL ("https://host:port"). It
// does not connect until the first call.
func Dial(ctx context.Context, nodeURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(nodeURL)
	if err != nil {
		return nil, fmt.Errorf("node URL %q: %w", nodeURL, err)
	}
	if u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("node URL %q: want https://HOST:PORT", nodeURL)
	}
	c := &Client{base: "https://" + u.Host, now: time.Now, tlsSessions: tls.NewLRUClientSessionCache(256)}
	for _, o := range opts {
		o(c)
	}
	if c.dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		c.dial = d.DialContext
	}
	c.nodeHTTP = c.httpClient(true, &tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         "node.cloister",
		InsecureSkipVerify: true, // replaced by VerifyConnection below
		VerifyConnection:   c.verifyNode,
	})
	c.node = cloisterv1connect.NewNodeServiceClient(c.nodeHTTP, c.base)
	return c, nil
}

// httpClient makes the HTTP client of one TLS identity: HTTP/2 for the
// node's own connection, which serves every session this Client creates,
// and HTTP/1.1 for a session's, which carries a handful of sequential
// calls and closes with the session — HTTP/2's connection set-up (preface,
// settings, flow-control windows, header tables, a reader goroutine on
// each side) cost more there than it saved (about 1 ms of CPU per session
// in bench/session). Calls made concurrently on one session open further
// connections, resumed from the TLS session cache.
func (c *Client) httpClient(h2 bool, tc *tls.Config) *http.Client {
	tc.NextProtos = []string{"http/1.1"}
	if h2 {
		tc.NextProtos = []string{"h2"}
	}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     tc,
		DialContext:         c.dial,
		ForceAttemptHTTP2:   h2,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}}
}

// verifyNode checks the node certificate against the pinned platform keys
// (if any): its signature must verify with one of them.
func (c *Client) verifyNode(cs tls.ConnectionState) error {
	if len(c.platformKeys) == 0 {
		return nil
	}
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("%w: no certificate", ErrNodeIdentity)
	}
	leaf := cs.PeerCertificates[0]
	if leaf.SignatureAlgorithm == x509.PureEd25519 {
		for _, k := range c.platformKeys {
			if ed25519.Verify(k, leaf.RawTBSCertificate, leaf.Signature) {
				if now := c.now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
					return fmt.Errorf("%w: node certificate is outside its validity window", ErrNodeIdentity)
				}
				return nil
			}
		}
	}
	return fmt.Errorf("%w: the node's TLS certificate is not signed by any of the %d platform keys the policy lists", ErrNodeIdentity, len(c.platformKeys))
}

// CreateSession asks the node to start a session for the policy document
// and returns its id. The node's view of the policy hash must equal the
// caller's, or the session is not used.
func (c *Client) CreateSession(ctx context.Context, policyDoc []byte) (string, error) {
	return c.createSession(ctx, policyDoc, nil)
}

func (c *Client) createSession(ctx context.Context, policyDoc []byte, replica *cloisterv1.ReplicaSet) (string, error) {
	pd, err := c.parseDoc(policyDoc)
	if err != nil {
		return "", fmt.Errorf("policy: %w", err)
	}
	if now := c.now(); !now.Before(pd.expires) {
		return "", fmt.Errorf("%w: policy %q expired at %s; no session was created", ErrPolicyExpired, pd.name, pd.expires.UTC().Format(time.RFC3339))
	}
	want := pd.hash
	req := &cloisterv1.CreateSessionRequest{Policy: policyDoc, AdmissionToken: c.token, Replica: replica}
	if c.creator != nil {
		if req.Auth, err = signRequest(c.creator, c.creator.Public().SigningString(), "", protocol.OpCreateSession, "", policyDoc, [32]byte{}, c.now()); err != nil {
			return "", err
		}
	}
	resp, err := c.node.CreateSession(ctx, connect.NewRequest(req))
	if err != nil {
		return "", fmt.Errorf("creating session: %w", err)
	}
	id := resp.Msg.SessionId
	if err := protocol.ValidSessionID(id); err != nil {
		return "", fmt.Errorf("node returned a bad session id: %w", err)
	}
	if !bytes.Equal(resp.Msg.PolicyHash, want[:]) {
		return "", fmt.Errorf("%w: node reports %x for the policy whose hash is %x", ErrPolicyMismatch, resp.Msg.PolicyHash, want)
	}
	return id, nil
}

// parseDoc parses and validates a policy document, remembering the last
// few documents: parsing costs more CPU than the rest of a create, and a
// client often creates sessions of one policy.
func (c *Client) parseDoc(doc []byte) (parsedDoc, error) {
	key := sha256.Sum256(doc)
	c.mu.Lock()
	pd, ok := c.hashes[key]
	c.mu.Unlock()
	if ok {
		return pd, nil
	}
	pol, err := policy.Parse(doc)
	if err != nil {
		return parsedDoc{}, err
	}
	pd = parsedDoc{hash: pol.Hash(), name: pol.Name, expires: pol.Expires}
	c.mu.Lock()
	if c.hashes == nil || len(c.hashes) >= 16 {
		c.hashes = map[[32]byte]parsedDoc{}
	}
	c.hashes[key] = pd
	c.mu.Unlock()
	return pd, nil
}

// Status reports a session's state. It is advisory: it travels over the
// node's connection, authenticated only if WithPlatformKeys was given.
// Wait on an AttestedSession is the attested equivalent. wait > 0
// long-polls until the session ends or wait elapses.
func (c *Client) Status(ctx context.Context, sessionID string, wait time.Duration) (*Status, error) {
	if err := protocol.ValidSessionID(sessionID); err != nil {
		return nil, err
	}
	resp, err := c.node.GetStatus(ctx, connect.NewRequest(&cloisterv1.GetStatusRequest{SessionId: sessionID, WaitMs: wait.Milliseconds()}))
	if err != nil {
		return nil, fmt.Errorf("session %s status: %w", sessionID, err)
	}
	return resp.Msg, nil
}

// NodeInfo reports the node's isolate class and platform key.
func (c *Client) NodeInfo(ctx context.Context) (*cloisterv1.GetNodeInfoResponse, error) {
	resp, err := c.node.GetNodeInfo(ctx, connect.NewRequest(&cloisterv1.GetNodeInfoRequest{}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// maxNodeStatus bounds the node's status document.
const maxNodeStatus = 1 << 20

// NodeStatus fetches the node's status document (node.StatusPath, JSON)
// and decodes it strictly into v (a *node.Status). It is the node's own,
// unverified, account of itself; with WithPlatformKeys the connection is
// at least to a node holding one of those keys.
func (c *Client) NodeStatus(ctx context.Context, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/node/status", nil)
	if err != nil {
		return err
	}
	res, err := c.nodeHTTP.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxNodeStatus+1))
	if err != nil {
		return fmt.Errorf("node status: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("node status: %s: %.200s", res.Status, b)
	}
	if len(b) > maxNodeStatus {
		return fmt.Errorf("node status: more than %d bytes", maxNodeStatus)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("node status: %w", err)
	}
	return nil
}

// Close releases idle connections.
func (c *Client) Close() { c.nodeHTTP.CloseIdleConnections() }

// spkiPin records the first session certificate key seen and refuses any
// other afterwards: every connection of one AttestedSession reaches the
// same TLS key, the one the evidence binds.
type spkiPin struct {
	mu   sync.Mutex
	spki []byte
}

func (p *spkiPin) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("session presented no certificate")
	}
	got := cs.PeerCertificates[0].RawSubjectPublicKeyInfo
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.spki == nil {
		p.spki = bytes.Clone(got)
		return nil
	}
	if !bytes.Equal(p.spki, got) {
		return fmt.Errorf("%w: session TLS key changed from %s to %s", ErrAttestation, protocol.SPKIHash(p.spki), protocol.SPKIHash(got))
	}
	return nil
}

func (p *spkiPin) get() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.spki
}
