package client

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/keys"
)

// SealedResult is an output as the node's isolate sealed it to one reader
// (an HPKE envelope to the reader's sealing key), with what opening it
// takes: the session, the output's name, the reader and the policy hash
// the envelope is bound to. It can be kept anywhere — a blob store, a
// disk — and opened later by the reader alone (OpenSealedResult).
type SealedResult struct {
	Session    string `json:"session"`
	Output     string `json:"output"`
	Reader     string `json:"reader"`
	PolicyHash string `json:"policy_hash"`
	Envelope   []byte `json:"envelope"`
}

// SealedResult fetches output as the reader holding key, unopened, and
// checks that it opens with key; it waits as Result does. Outputs the node
// streams as sealed files (large ones) are not returned this way.
func (a *AttestedSession) SealedResult(ctx context.Context, key *keys.PrivateKey, output string) (*SealedResult, []byte, error) {
	p, resp, err := a.getResult(ctx, key, output)
	if err != nil {
		return nil, nil, err
	}
	if resp.Stream != nil {
		return nil, nil, fmt.Errorf("result %q is streamed as a sealed file; it has no single envelope", output)
	}
	pt, err := a.openResult(key, p.ID, output, resp)
	if err != nil {
		return nil, nil, err
	}
	return &SealedResult{Session: a.id, Output: output, Reader: p.ID, PolicyHash: hex.EncodeToString(a.hash[:]), Envelope: resp.Envelope}, pt, nil
}

// OpenSealedResult opens r with the reader's key: only the key the
// envelope was sealed to opens it, and only with the session, output,
// reader and policy hash it was sealed under.
func OpenSealedResult(key *keys.PrivateKey, r *SealedResult) ([]byte, error) {
	h, err := hex.DecodeString(r.PolicyHash)
	if err != nil || len(h) != 32 {
		return nil, errors.New("sealed result: policy_hash: want 64 hex digits")
	}
	pt, err := key.Open(r.Envelope, protocol.SealInfo(protocol.KindOutput, r.Session, r.Output, r.Reader), protocol.SealAAD([32]byte(h)))
	if err != nil {
		return nil, fmt.Errorf("result %q of session %s for %q: opening: %w", r.Output, r.Session, r.Reader, err)
	}
	return pt, nil
}
