package node

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/jcs"
	"github.com/cloisterhq/cloister/keys"
)

// AdmissionToken is what an operator signs to let one key create sessions
// on nodes that trust the operator's key (admission mode "token"). The
// token says who may create (Subject), on which node (Node, or any node
// that trusts Issuer when empty) and until when; the creator still signs
// each create request with the subject key, so a token that leaks admits
// nobody else.
//
// Text form: "cat1." base64url(payload) "." base64url(signature), no
// padding. The payload is the token's canonical JSON (RFC 8785: the only
// form accepted, so the signed bytes have one spelling); the signature is
// Ed25519 by Issuer over protocol.AdmissionTokenLabel ‖ payload.
type AdmissionToken struct {
	Version int       `json:"v"`
	Issuer  string    `json:"issuer"`         // operator's signing key, "ed25519:..."
	Subject string    `json:"subject"`        // creator's signing key
	Node    string    `json:"node,omitempty"` // node platform key; "" = any node trusting Issuer
	Expires time.Time `json:"expires"`
}

const (
	tokenPrefix  = "cat1."
	tokenVersion = 1
	// maxTokenLen bounds a token's text: three keys, a time, a signature.
	maxTokenLen = 1024
)

// IssueAdmissionToken signs a token admitting subject on node (nil: any
// node that trusts issuer) until expires.
func IssueAdmissionToken(issuer *keys.PrivateKey, subject, node ed25519.PublicKey, expires time.Time) (string, error) {
	if len(subject) != ed25519.PublicKeySize {
		return "", errors.New("admission token: no subject key")
	}
	t := AdmissionToken{Version: tokenVersion, Issuer: issuer.Public().SigningString(), Subject: keys.FormatSigningKey(subject),
		Expires: expires.UTC().Truncate(time.Second)}
	if node != nil {
		t.Node = keys.FormatSigningKey(node)
	}
	raw, err := json.Marshal(t)
	if err != nil {
		return "", err
	}
	payload, err := jcs.Canonicalize(raw)
	if err != nil {
		return "", err
	}
	sig := issuer.Sign(append([]byte(protocol.AdmissionTokenLabel), payload...))
	enc := base64.RawURLEncoding
	return tokenPrefix + enc.EncodeToString(payload) + "." + enc.EncodeToString(sig), nil
}

// ParseAdmissionToken decodes a token and checks its signature against
// its own issuer key. Whether that issuer is trusted, the token is for
// this node and is still valid is for the caller (VerifyAdmissionToken).
func ParseAdmissionToken(s string) (*AdmissionToken, ed25519.PublicKey, error) {
	if len(s) > maxTokenLen {
		return nil, nil, fmt.Errorf("admission token is %d bytes, at most %d", len(s), maxTokenLen)
	}
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok {
		return nil, nil, fmt.Errorf("admission token does not start with %q", tokenPrefix)
	}
	p64, s64, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, nil, errors.New("admission token: want cat1.<payload>.<signature>")
	}
	enc := base64.RawURLEncoding.Strict()
	payload, err := enc.DecodeString(p64)
	if err != nil {
		return nil, nil, fmt.Errorf("admission token payload: %v", err)
	}
	sig, err := enc.DecodeString(s64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, nil, errors.New("admission token signature: want 64 bytes of unpadded base64url")
	}
	canon, err := jcs.Canonicalize(payload)
	if err != nil || !bytes.Equal(canon, payload) {
		return nil, nil, errors.New("admission token payload is not canonical JSON (RFC 8785)")
	}
	var t AdmissionToken
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return nil, nil, fmt.Errorf("admission token payload: %v", err)
	}
	if t.Version != tokenVersion {
		return nil, nil, fmt.Errorf("admission token version %d, this node reads %d", t.Version, tokenVersion)
	}
	issuer, err := keys.ParseSigningKey(t.Issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("admission token issuer: %v", err)
	}
	if _, err := keys.ParseSigningKey(t.Subject); err != nil {
		return nil, nil, fmt.Errorf("admission token subject: %v", err)
	}
	if t.Node != "" {
		if _, err := keys.ParseSigningKey(t.Node); err != nil {
			return nil, nil, fmt.Errorf("admission token node: %v", err)
		}
	}
	if !ed25519.Verify(issuer, append([]byte(protocol.AdmissionTokenLabel), payload...), sig) {
		return nil, nil, errors.New("admission token signature does not verify with its issuer key")
	}
	return &t, issuer, nil
}

// VerifyAdmissionToken checks that token admits subject on the node whose
// platform key is node, at now, signed by one of issuers.
func VerifyAdmissionToken(token string, issuers []ed25519.PublicKey, subject, node ed25519.PublicKey, now time.Time) error {
	t, issuer, err := ParseAdmissionToken(token)
	if err != nil {
		return err
	}
	trusted := false
	for _, k := range issuers {
		trusted = trusted || k.Equal(issuer)
	}
	if !trusted {
		return fmt.Errorf("admission token is signed by %s, which this node does not trust (--token-issuer)", t.Issuer)
	}
	if t.Subject != keys.FormatSigningKey(subject) {
		return fmt.Errorf("admission token admits %s, not the creator %s", t.Subject, keys.FormatSigningKey(subject))
	}
	if t.Node != "" && t.Node != keys.FormatSigningKey(node) {
		return fmt.Errorf("admission token is for node %s, not this one (%s)", t.Node, keys.FormatSigningKey(node))
	}
	if !now.Before(t.Expires) {
		return fmt.Errorf("admission token expired at %s", t.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}
