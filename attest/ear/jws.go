package ear

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"

	"github.com/cloisterhq/cloister/attest"
)

// maxTokenSize bounds what Verify accepts.
const maxTokenSize = 256 << 10

var b64 = base64.RawURLEncoding

type jwsHeader struct {
	Alg  string   `json:"alg"`
	Typ  string   `json:"typ,omitempty"`
	Kid  string   `json:"kid,omitempty"`
	Crit []string `json:"crit,omitempty"`
}

// algFor names the JWS algorithm a key signs with.
func algFor(k crypto.PublicKey) (string, error) {
	switch pk := k.(type) {
	case *ecdsa.PublicKey:
		switch pk.Curve {
		case elliptic.P256():
			return "ES256", nil
		case elliptic.P384():
			return "ES384", nil
		}
		return "", fmt.Errorf("ECDSA curve %s not supported (P-256 or P-384)", pk.Curve.Params().Name)
	case ed25519.PublicKey:
		return "EdDSA", nil
	}
	return "", fmt.Errorf("key type %T not supported (ECDSA P-256/P-384 or Ed25519)", k)
}

// signJWS produces a compact JWS over payload.
func signJWS(payload []byte, signer crypto.Signer) (string, error) {
	alg, err := algFor(signer.Public())
	if err != nil {
		return "", err
	}
	hdr, err := json.Marshal(jwsHeader{Alg: alg, Typ: "JWT"})
	if err != nil {
		return "", err
	}
	input := b64.EncodeToString(hdr) + "." + b64.EncodeToString(payload)
	var sig []byte
	switch alg {
	case "EdDSA":
		sig, err = signer.Sign(rand.Reader, []byte(input), crypto.Hash(0))
	case "ES256", "ES384":
		h, size := crypto.SHA256, 32
		if alg == "ES384" {
			h, size = crypto.SHA384, 48
		}
		hh := h.New()
		hh.Write([]byte(input))
		var der []byte
		if der, err = signer.Sign(rand.Reader, hh.Sum(nil), h); err == nil {
			sig, err = derToRaw(der, size)
		}
	}
	if err != nil {
		return "", fmt.Errorf("signing EAR: %w", err)
	}
	return input + "." + b64.EncodeToString(sig), nil
}

// verifyJWS checks a compact JWS against the trusted keys and returns the
// payload and the key that verified it.
func verifyJWS(token []byte, keys []crypto.PublicKey) ([]byte, crypto.PublicKey, error) {
	if len(token) == 0 || len(token) > maxTokenSize {
		return nil, nil, fmt.Errorf("%w: EAR token is %d bytes (1..%d)", attest.ErrMalformed, len(token), maxTokenSize)
	}
	parts := bytes.Split(token, []byte("."))
	if len(parts) != 3 {
		return nil, nil, fmt.Errorf("%w: EAR token has %d dot-separated parts, want 3 (compact JWS)", attest.ErrMalformed, len(parts))
	}
	dec := func(name string, p []byte) ([]byte, error) {
		b, err := b64.Strict().DecodeString(string(p))
		if err != nil {
			return nil, fmt.Errorf("%w: EAR token %s is not base64url without padding: %v", attest.ErrMalformed, name, err)
		}
		return b, nil
	}
	hdrRaw, err := dec("header", parts[0])
	if err != nil {
		return nil, nil, err
	}
	payload, err := dec("payload", parts[1])
	if err != nil {
		return nil, nil, err
	}
	sig, err := dec("signature", parts[2])
	if err != nil {
		return nil, nil, err
	}
	var hdr jwsHeader
	if err := strictJSON(hdrRaw, &hdr); err != nil {
		return nil, nil, fmt.Errorf("%w: EAR token header: %v", attest.ErrMalformed, err)
	}
	if len(hdr.Crit) > 0 {
		return nil, nil, fmt.Errorf("%w: EAR token header has critical extensions %v this verifier does not implement", attest.ErrMalformed, hdr.Crit)
	}
	switch hdr.Alg {
	case "ES256", "ES384", "EdDSA":
	default:
		return nil, nil, fmt.Errorf("%w: EAR token algorithm %q refused (only ES256, ES384, EdDSA)", attest.ErrSignature, hdr.Alg)
	}
	if len(keys) == 0 {
		return nil, nil, fmt.Errorf("%w: no verifier key pinned for EAR tokens", attest.ErrUntrustedSigner)
	}
	input := token[:len(parts[0])+1+len(parts[1])]
	candidates := 0
	for _, k := range keys {
		alg, err := algFor(k)
		if err != nil || alg != hdr.Alg {
			continue
		}
		candidates++
		if verifySig(alg, k, input, sig) {
			return payload, k, nil
		}
	}
	if candidates == 0 {
		return nil, nil, fmt.Errorf("%w: none of the %d pinned keys signs %s", attest.ErrUntrustedSigner, len(keys), hdr.Alg)
	}
	return nil, nil, fmt.Errorf("%w: EAR token signature does not verify with any of the %d pinned %s keys", attest.ErrSignature, candidates, hdr.Alg)
}

func verifySig(alg string, k crypto.PublicKey, input, sig []byte) bool {
	switch alg {
	case "EdDSA":
		pk := k.(ed25519.PublicKey)
		return len(sig) == ed25519.SignatureSize && ed25519.Verify(pk, input, sig)
	case "ES256":
		d := sha256.Sum256(input)
		return verifyRaw(k.(*ecdsa.PublicKey), d[:], sig, 32)
	case "ES384":
		d := sha512.Sum384(input)
		return verifyRaw(k.(*ecdsa.PublicKey), d[:], sig, 48)
	}
	return false
}

// verifyRaw checks a JWS ECDSA signature: R and S, big-endian, each exactly
// size bytes (RFC 7518 §3.4; DER signatures are not JWS).
func verifyRaw(pk *ecdsa.PublicKey, digest, sig []byte, size int) bool {
	if len(sig) != 2*size {
		return false
	}
	r := new(big.Int).SetBytes(sig[:size])
	s := new(big.Int).SetBytes(sig[size:])
	return ecdsa.Verify(pk, digest, r, s)
}

func derToRaw(der []byte, size int) ([]byte, error) {
	r, s, err := parseDERSignature(der)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 2*size)
	r.FillBytes(out[:size])
	s.FillBytes(out[size:])
	return out, nil
}

func strictJSON(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return fmt.Errorf("trailing data after the JSON object")
	}
	var rest json.RawMessage
	if err := d.Decode(&rest); err == nil {
		return fmt.Errorf("trailing data after the JSON object")
	}
	return nil
}
