package client

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cloisterhq/cloister/api/protocol"
)

// ResultCommitment is the body of a result.committed ledger entry: which
// sealed envelope each reader of each output was given, signed by the
// session's TLS key, the key every principal pinned when it attested the
// session. It carries hashes of envelopes only, never data.
type ResultCommitment struct {
	Session    string `json:"session"`
	PolicyHash string `json:"policy_hash"` // hex SHA-256 of the policy's canonical form
	// Outputs maps output name → reader id → hex SHA-256 of the envelope
	// sealed to that reader.
	Outputs map[string]map[string]string `json:"outputs"`
	// SessionKey is the DER SubjectPublicKeyInfo of the session TLS key
	// (ECDSA P-256); Signature is its ASN.1 ECDSA signature over
	// SHA-256(protocol.ResultCommitmentMessage(...)).
	SessionKey []byte `json:"session_key"`
	Signature  []byte `json:"signature"`
}

// ParseResultCommitment reads a result.committed entry body. It checks
// shape only; Verify checks the signature.
func ParseResultCommitment(body []byte) (*ResultCommitment, error) {
	var rc ResultCommitment
	if err := json.Unmarshal(body, &rc); err != nil {
		return nil, fmt.Errorf("result commitment: %w", err)
	}
	switch {
	case rc.Session == "":
		return nil, errors.New("result commitment: no session")
	case len(rc.PolicyHash) != 64:
		return nil, fmt.Errorf("result commitment: policy_hash %.70q is not 64 hex digits", rc.PolicyHash)
	case rc.Outputs == nil:
		return nil, errors.New("result commitment: no outputs")
	case len(rc.SessionKey) == 0:
		return nil, errors.New("result commitment: no session_key")
	case len(rc.Signature) == 0:
		return nil, errors.New("result commitment: no signature")
	}
	if _, err := hex.DecodeString(rc.PolicyHash); err != nil {
		return nil, fmt.Errorf("result commitment: policy_hash: %w", err)
	}
	return &rc, nil
}

// Verify checks that the commitment was signed by the session key
// pinnedSPKI (the DER public key a principal pinned when it attested the
// session, AttestedSession.SessionKey). A commitment carrying any other
// key is refused even if its signature is good: only the attested key
// speaks for the session.
func (rc *ResultCommitment) Verify(pinnedSPKI []byte) error {
	if !bytes.Equal(rc.SessionKey, pinnedSPKI) {
		return fmt.Errorf("result commitment of session %s: session_key (sha256 %x) is not the attested session key (sha256 %x)",
			rc.Session, sha256.Sum256(rc.SessionKey), sha256.Sum256(pinnedSPKI))
	}
	pub, err := x509.ParsePKIXPublicKey(rc.SessionKey)
	if err != nil {
		return fmt.Errorf("result commitment of session %s: session_key: %w", rc.Session, err)
	}
	ek, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("result commitment of session %s: session_key is %T, want ECDSA", rc.Session, pub)
	}
	msg, err := protocol.ResultCommitmentMessage(rc.Session, rc.PolicyHash, rc.Outputs)
	if err != nil {
		return err
	}
	h := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(ek, h[:], rc.Signature) {
		return fmt.Errorf("result commitment of session %s: signature does not verify under the session key", rc.Session)
	}
	return nil
}

// SessionKey returns the DER SubjectPublicKeyInfo of the session TLS key
// pinned at attestation: the key a result commitment must be signed by.
func (a *AttestedSession) SessionKey() []byte { return bytes.Clone(a.spki) }
