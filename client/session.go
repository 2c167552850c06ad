package client

import (
	"bytes"
	"context"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"connectrpc.com/connect"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/cloister/v1/cloisterv1connect"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	_ "github.com/cloisterhq/cloister/attest/all" // verify any class a policy accepts
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/policy"
	"github.com/cloisterhq/cloister/seal"
)

// AttestedSession is a session whose evidence this client verified against
// its own policy. Its methods send only to the TLS key that evidence bound.
type AttestedSession struct {
	c      *Client
	id     string
	pol    *policy.Policy
	hash   [32]byte
	hpke   hpke.PublicKey
	spki   []byte
	claims *attest.Claims

	http    *http.Client
	session cloisterv1connect.SessionServiceClient
	node    cloisterv1connect.NodeServiceClient
}

// Attest connects to session sessionID with its own server name, sends a
// fresh nonce and verifies the evidence returned against pol:
//
//   - the session's policy hash equals pol's (ErrPolicyMismatch);
//   - the evidence class is one pol accepts, and the evidence verifies with
//     that isolate entry's pinned keys and roots (ErrAttestation);
//   - its claims meet the entry's reference values (measurements, TCB,
//     debug) and its report data equals protocol.ReportData over pol's
//     hash, the TLS key this connection saw, the HPKE key returned and the
//     nonce (ErrAttestation wrapping attest.ErrReportData).
//
// Nothing else is sent before these checks pass.
func (c *Client) Attest(ctx context.Context, sessionID string, pol *policy.Policy) (*AttestedSession, error) {
	if err := protocol.ValidSessionID(sessionID); err != nil {
		return nil, err
	}
	if pol == nil {
		return nil, errors.New("attest: no policy")
	}
	pin := &spkiPin{}
	hc := c.httpClient(false, &tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         protocol.ServerName(sessionID),
		InsecureSkipVerify: true, // the key is trusted through evidence, then pinned
		VerifyConnection:   pin.verify,
		ClientSessionCache: c.tlsSessions,
	})
	a := &AttestedSession{
		c: c, id: sessionID, pol: pol, hash: pol.Hash(), http: hc,
		session: cloisterv1connect.NewSessionServiceClient(hc, c.base),
		node:    cloisterv1connect.NewNodeServiceClient(hc, c.base),
	}
	nonce := make([]byte, protocol.NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	resp, err := a.session.Attest(ctx, connect.NewRequest(&cloisterv1.AttestRequest{SessionId: sessionID, Nonce: nonce}))
	if err != nil {
		hc.CloseIdleConnections()
		return nil, fmt.Errorf("session %s: attest: %w", sessionID, err)
	}
	if err := a.verify(ctx, resp.Msg, nonce, pin.get()); err != nil {
		hc.CloseIdleConnections()
		return nil, fmt.Errorf("session %s: %w", sessionID, err)
	}
	return a, nil
}

// VerifyAttestation checks an Attest response exactly as Attest does, for
// callers that obtained it themselves: spki is the DER public key of the
// session certificate seen in the TLS handshake, nonce the one sent.
func VerifyAttestation(ctx context.Context, pol *policy.Policy, sessionID string, resp *cloisterv1.AttestResponse, nonce, spki []byte, now time.Time) (*attest.Claims, error) {
	a := &AttestedSession{c: &Client{now: func() time.Time { return now }}, id: sessionID, pol: pol, hash: pol.Hash()}
	if err := a.verify(ctx, resp, nonce, spki); err != nil {
		return nil, err
	}
	return a.claims, nil
}

func (a *AttestedSession) verify(ctx context.Context, resp *cloisterv1.AttestResponse, nonce, spki []byte) error {
	if resp.SessionId != a.id {
		return fmt.Errorf("%w: response is for session %q", ErrAttestation, resp.SessionId)
	}
	if !bytes.Equal(resp.PolicyHash, a.hash[:]) {
		return fmt.Errorf("%w: the session runs policy %x, this policy (%q) hashes to %x; nothing was sent", ErrPolicyMismatch, resp.PolicyHash, a.pol.Name, a.hash)
	}
	if spki == nil {
		return fmt.Errorf("%w: no session TLS key observed", ErrAttestation)
	}
	if resp.Evidence == nil {
		return fmt.Errorf("%w: no evidence", ErrAttestation)
	}
	if _, ok := a.pol.Isolate(resp.Evidence.Class); !ok {
		return fmt.Errorf("%w: evidence class %q is not among the isolate classes policy %q accepts", ErrAttestation, resp.Evidence.Class, a.pol.Name)
	}
	ref, vopts, err := a.pol.ReferenceValues(attest.Class(resp.Evidence.Class))
	if err != nil {
		return fmt.Errorf("%w: policy isolates[class=%s]: %v", ErrAttestation, resp.Evidence.Class, err)
	}
	now := a.c.now()
	vopts.Now = now
	ev := &attest.Evidence{Class: attest.Class(resp.Evidence.Class), Data: resp.Evidence.Data, Collateral: resp.Evidence.Collateral}
	claims, err := attest.Verify(ctx, ev, vopts)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrAttestation, err)
	}
	rd := protocol.ReportData(a.hash, spki, resp.HpkePublicKey, nonce)
	ref.ReportData = rd[:]
	if err := attest.Validate(claims, ref, now); err != nil {
		if errors.Is(err, attest.ErrReportData) {
			return fmt.Errorf("%w: %w: the evidence does not bind this policy, this session's TLS and HPKE keys and this nonce (replayed, or from another session)", ErrAttestation, attest.ErrReportData)
		}
		return fmt.Errorf("%w: %w", ErrAttestation, err)
	}
	pub, err := seal.ParsePublicKey(resp.HpkePublicKey)
	if err != nil {
		return fmt.Errorf("%w: session HPKE key: %w", ErrAttestation, err)
	}
	a.hpke, a.spki, a.claims = pub, bytes.Clone(spki), claims
	return nil
}

// ID returns the session id.
func (a *AttestedSession) ID() string { return a.id }

// PolicyHash returns the hash of the policy the session was verified under.
func (a *AttestedSession) PolicyHash() [32]byte { return a.hash }

// Claims returns the verified claims of the session's evidence.
func (a *AttestedSession) Claims() *attest.Claims { return a.claims }

// TLSKeyHash returns hex SHA-256 of the pinned session TLS key.
func (a *AttestedSession) TLSKeyHash() string { return protocol.SPKIHash(a.spki) }

// HPKEKeyHash returns hex SHA-256 of the session HPKE public key.
func (a *AttestedSession) HPKEKeyHash() string {
	h := sha256.Sum256(seal.MarshalPublicKey(a.hpke))
	return hex.EncodeToString(h[:])
}

// CloseIdleConnections releases the session's connections.
func (a *AttestedSession) CloseIdleConnections() { a.http.CloseIdleConnections() }

// principal finds the policy principal holding key.
func (a *AttestedSession) principal(key *keys.PrivateKey) (*policy.Principal, error) {
	if key == nil {
		return nil, fmt.Errorf("%w: no key", ErrNotPrincipal)
	}
	p, ok := a.pol.PrincipalBySigningKey(key.Public().Signing)
	if !ok {
		return nil, fmt.Errorf("%w: signing key %s is not listed in policy %q; nothing was sent", ErrNotPrincipal, key.Public().SigningString(), a.pol.Name)
	}
	return p, nil
}

// sign builds the SignedRequest for op on name over payload.
func (a *AttestedSession) sign(key *keys.PrivateKey, principal, op, name string, payload []byte) (*cloisterv1.SignedRequest, error) {
	return signRequest(key, principal, a.id, op, name, payload, a.hash, a.c.now())
}

// signRequest signs protocol.RequestMessage with a fresh nonce.
func signRequest(key *keys.PrivateKey, principal, sessionID, op, name string, payload []byte, policyHash [32]byte, now time.Time) (*cloisterv1.SignedRequest, error) {
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	var ph [32]byte
	if payload != nil {
		ph = sha256.Sum256(payload)
	}
	ms := now.UnixMilli()
	msg := protocol.RequestMessage(sessionID, op, name, ph, policyHash, ms, nonce)
	return &cloisterv1.SignedRequest{Principal: principal, UnixMs: ms, Nonce: nonce, Signature: key.Sign(msg)}, nil
}

// Upload is the node's receipt for a program or input.
type Upload struct {
	EnvelopeSHA256 string
	State          cloisterv1.SessionState
	// EventIndex is 0: the node appends the upload's ledger entry after it
	// answers; Status waits for it and shows its index.
	EventIndex uint64
}

// UploadProgram seals program to the session and sends it, signed by key.
func (a *AttestedSession) UploadProgram(ctx context.Context, key *keys.PrivateKey, name string, program []byte) (*Upload, error) {
	return a.upload(ctx, key, true, name, program)
}

// UploadInput seals data to the session and sends it, signed by key.
func (a *AttestedSession) UploadInput(ctx context.Context, key *keys.PrivateKey, name string, data []byte) (*Upload, error) {
	return a.upload(ctx, key, false, name, data)
}

func (a *AttestedSession) upload(ctx context.Context, key *keys.PrivateKey, program bool, name string, data []byte) (*Upload, error) {
	p, err := a.principal(key)
	if err != nil {
		return nil, err
	}
	kind := protocol.KindInput
	if program {
		kind = protocol.KindProgram
	}
	env, err := seal.Seal(a.hpke, data, protocol.SealInfo(kind, a.id, name, ""), protocol.SealAAD(a.hash))
	if err != nil {
		return nil, err
	}
	return a.send(ctx, key, p.ID, program, name, env)
}

// SendEnvelope uploads an envelope the caller sealed itself (to the
// session's HPKE key, with protocol.SealInfo and protocol.SealAAD). It
// exists for callers that seal elsewhere, such as a hardware token.
func (a *AttestedSession) SendEnvelope(ctx context.Context, key *keys.PrivateKey, program bool, name string, envelope []byte) (*Upload, error) {
	p, err := a.principal(key)
	if err != nil {
		return nil, err
	}
	return a.send(ctx, key, p.ID, program, name, envelope)
}

func (a *AttestedSession) send(ctx context.Context, key *keys.PrivateKey, principal string, program bool, name string, env []byte) (*Upload, error) {
	if err := a.live(); err != nil {
		return nil, fmt.Errorf("upload %q as %q: %w", name, principal, err)
	}
	op := protocol.OpUploadInput
	if program {
		op = protocol.OpUploadProgram
	}
	auth, err := a.sign(key, principal, op, name, env)
	if err != nil {
		return nil, err
	}
	req := connect.NewRequest(&cloisterv1.UploadRequest{SessionId: a.id, Name: name, Envelope: env, Auth: auth})
	var resp *connect.Response[cloisterv1.UploadResponse]
	if program {
		resp, err = a.session.UploadProgram(ctx, req)
	} else {
		resp, err = a.session.UploadInput(ctx, req)
	}
	if err != nil {
		return nil, fmt.Errorf("upload %q as %q: %w", name, principal, err)
	}
	return &Upload{EnvelopeSHA256: resp.Msg.EnvelopeSha256, State: resp.Msg.State, EventIndex: resp.Msg.EventIndex}, nil
}

// live refuses to send data under a policy that has expired by the
// caller's clock: the node refuses it too, but the client does not rely on
// the node to keep data it should not have been sent.
func (a *AttestedSession) live() error {
	if a.pol.Expired(a.c.now()) {
		return fmt.Errorf("%w: policy %q expired at %s; nothing was sent", ErrPolicyExpired, a.pol.Name, a.pol.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}

// Status reports the session's state over the attested connection.
func (a *AttestedSession) Status(ctx context.Context) (*Status, error) {
	resp, err := a.node.GetStatus(ctx, connect.NewRequest(&cloisterv1.GetStatusRequest{SessionId: a.id}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// Terminal reports whether a state is final (finished, failed, closed).
func Terminal(s cloisterv1.SessionState) bool {
	switch s {
	case cloisterv1.SessionState_SESSION_STATE_FINISHED, cloisterv1.SessionState_SESSION_STATE_FAILED, cloisterv1.SessionState_SESSION_STATE_CLOSED:
		return true
	}
	return false
}

// longPoll is how long one request waits at the node before returning.
const longPoll = 30 * time.Second

// Wait blocks until the session finishes, fails or is closed, or ctx ends.
func (a *AttestedSession) Wait(ctx context.Context) (*Status, error) {
	for {
		wait := longPoll
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl))
		}
		resp, err := a.node.GetStatus(ctx, connect.NewRequest(&cloisterv1.GetStatusRequest{SessionId: a.id, WaitMs: max(1, wait.Milliseconds())}))
		if err != nil {
			return nil, err
		}
		if Terminal(resp.Msg.State) {
			return resp.Msg, nil
		}
		if err := ctx.Err(); err != nil {
			return resp.Msg, err
		}
	}
}

// Result fetches output as the reader holding key and opens it. If ctx has
// a deadline it waits for the run to end until then; otherwise it asks once
// and fails with connect.CodeUnavailable if the run has not finished. A
// streamed output (ResultTo) is read whole into memory.
func (a *AttestedSession) Result(ctx context.Context, key *keys.PrivateKey, output string) ([]byte, error) {
	p, resp, err := a.getResult(ctx, key, output)
	if err != nil {
		return nil, err
	}
	if resp.Stream == nil {
		return a.openResult(key, p.ID, output, resp)
	}
	var b bytes.Buffer
	if _, err := a.readStream(ctx, key, p.ID, output, resp.Stream, &b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// ResultTo is Result writing the plaintext to w. A large output, kept by
// the node as a sealed file, is fetched in chunks and opened as it
// arrives (never whole in memory), resuming after a dropped connection;
// on an error w may hold a prefix of the plaintext (write to a temporary
// file and keep it only on success).
func (a *AttestedSession) ResultTo(ctx context.Context, key *keys.PrivateKey, output string, w io.Writer) (int64, error) {
	p, resp, err := a.getResult(ctx, key, output)
	if err != nil {
		return 0, err
	}
	if resp.Stream != nil {
		return a.readStream(ctx, key, p.ID, output, resp.Stream, w)
	}
	pt, err := a.openResult(key, p.ID, output, resp)
	if err != nil {
		return 0, err
	}
	n, err := w.Write(pt)
	return int64(n), err
}

// getResult asks for output, signed by key, waiting as Result says.
func (a *AttestedSession) getResult(ctx context.Context, key *keys.PrivateKey, output string) (*policy.Principal, *cloisterv1.GetResultResponse, error) {
	p, err := a.principal(key)
	if err != nil {
		return nil, nil, err
	}
	for {
		var wait time.Duration
		if dl, ok := ctx.Deadline(); ok {
			wait = min(longPoll, time.Until(dl))
		}
		auth, err := a.sign(key, p.ID, protocol.OpGetResult, output, nil)
		if err != nil {
			return nil, nil, err
		}
		resp, err := a.session.GetResult(ctx, connect.NewRequest(&cloisterv1.GetResultRequest{SessionId: a.id, Output: output, WaitMs: wait.Milliseconds(), Auth: auth}))
		if err != nil {
			if connect.CodeOf(err) == connect.CodeUnavailable && wait > 0 && ctx.Err() == nil && time.Until(deadline(ctx)) > 0 {
				continue
			}
			return nil, nil, fmt.Errorf("result %q for %q: %w", output, p.ID, err)
		}
		return p, resp.Msg, nil
	}
}

// openResult opens an output's envelope.
func (a *AttestedSession) openResult(key *keys.PrivateKey, reader, output string, resp *cloisterv1.GetResultResponse) ([]byte, error) {
	pt, err := key.Open(resp.Envelope, protocol.SealInfo(protocol.KindOutput, a.id, output, reader), protocol.SealAAD(a.hash))
	if err != nil {
		return nil, fmt.Errorf("result %q for %q: opening: %w", output, reader, err)
	}
	return pt, nil
}

func deadline(ctx context.Context) time.Time {
	dl, _ := ctx.Deadline()
	return dl
}

// Close asks the node to erase the session, signed by key.
func (a *AttestedSession) Close(ctx context.Context, key *keys.PrivateKey) error {
	p, err := a.principal(key)
	if err != nil {
		return err
	}
	auth, err := a.sign(key, p.ID, protocol.OpClose, "", nil)
	if err != nil {
		return err
	}
	if _, err := a.session.CloseSession(ctx, connect.NewRequest(&cloisterv1.CloseSessionRequest{SessionId: a.id, Auth: auth})); err != nil {
		return fmt.Errorf("close as %q: %w", p.ID, err)
	}
	return nil
}
