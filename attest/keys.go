package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/cloisterhq/cloister/api/protocol"
)

// TrustAnchors are roots and pinned keys read from files (ParseTrustAnchors).
type TrustAnchors struct {
	Roots []*x509.Certificate
	Keys  []crypto.PublicKey
}

// ParseTrustAnchors reads trust anchors from one file's contents:
//   - PEM "CERTIFICATE" blocks: root certificates;
//   - PEM "PUBLIC KEY" blocks (PKIX): pinned keys (Ed25519, ECDSA, RSA);
//   - a JWK, or a JWK Set ({"keys": [...]}): pinned keys (EC P-256/P-384/
//     P-521, OKP Ed25519, RSA);
//   - a DER certificate;
//   - lines of the form "ed25519:<base64>": pinned Ed25519 platform keys.
//
// name is used in error messages only.
func ParseTrustAnchors(name string, data []byte) (*TrustAnchors, error) {
	t := bytes.TrimSpace(data)
	ta := &TrustAnchors{}
	switch {
	case len(t) == 0:
		return nil, fmt.Errorf("%s: empty", name)
	case bytes.HasPrefix(t, []byte("-----BEGIN")):
		rest := t
		for {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			switch blk.Type {
			case "CERTIFICATE":
				c, err := x509.ParseCertificate(blk.Bytes)
				if err != nil {
					return nil, fmt.Errorf("%s: certificate: %v", name, err)
				}
				ta.Roots = append(ta.Roots, c)
			case "PUBLIC KEY":
				k, err := x509.ParsePKIXPublicKey(blk.Bytes)
				if err != nil {
					return nil, fmt.Errorf("%s: public key: %v", name, err)
				}
				ta.Keys = append(ta.Keys, k)
			default:
				return nil, fmt.Errorf("%s: PEM block %q is neither CERTIFICATE nor PUBLIC KEY", name, blk.Type)
			}
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			return nil, fmt.Errorf("%s: trailing data after the PEM blocks", name)
		}
	case t[0] == '{':
		keys, err := ParseJWKs(t)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		ta.Keys = keys
	case bytes.HasPrefix(t, []byte(protocol.Ed25519KeyPrefix)):
		for _, line := range strings.Split(string(t), "\n") {
			line = strings.TrimSpace(line)
			if line == "" {
				continue
			}
			pub, err := protocol.ParseEd25519Key(line)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", name, err)
			}
			ta.Keys = append(ta.Keys, pub)
		}
	default:
		c, err := x509.ParseCertificate(t)
		if err != nil {
			return nil, fmt.Errorf("%s: neither PEM, JWK, ed25519:<base64> nor a DER certificate (%v)", name, err)
		}
		ta.Roots = append(ta.Roots, c)
	}
	if len(ta.Roots) == 0 && len(ta.Keys) == 0 {
		return nil, fmt.Errorf("%s: no certificate or public key found", name)
	}
	return ta, nil
}

// JWK is the subset of RFC 7517 members public keys need.
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	D   string `json:"d,omitempty"`
	Kid string `json:"kid,omitempty"`
	Alg string `json:"alg,omitempty"`
}

// ParseJWKs reads a JWK or a JWK Set and returns its public keys. Private
// members ("d") are refused: a trust anchor file must not hold secrets.
func ParseJWKs(data []byte) ([]crypto.PublicKey, error) {
	var set struct {
		Keys []JWK `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err == nil && len(set.Keys) > 0 {
		out := make([]crypto.PublicKey, 0, len(set.Keys))
		for i, k := range set.Keys {
			pk, err := k.PublicKey()
			if err != nil {
				return nil, fmt.Errorf("JWK set key %d: %w", i, err)
			}
			out = append(out, pk)
		}
		return out, nil
	}
	var k JWK
	if err := json.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("JWK: %v", err)
	}
	pk, err := k.PublicKey()
	if err != nil {
		return nil, err
	}
	return []crypto.PublicKey{pk}, nil
}

// PublicKey converts the JWK to a Go public key, checking that EC points
// lie on their curve.
func (k JWK) PublicKey() (crypto.PublicKey, error) {
	if k.D != "" {
		return nil, errors.New("JWK holds a private key; give the public key only")
	}
	b64 := func(field, s string) ([]byte, error) {
		b, err := base64.RawURLEncoding.Strict().DecodeString(strings.TrimRight(s, "="))
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("JWK member %q is not base64url", field)
		}
		return b, nil
	}
	switch k.Kty {
	case "EC":
		var curve elliptic.Curve
		var ec ecdh.Curve
		switch k.Crv {
		case "P-256":
			curve, ec = elliptic.P256(), ecdh.P256()
		case "P-384":
			curve, ec = elliptic.P384(), ecdh.P384()
		case "P-521":
			curve, ec = elliptic.P521(), ecdh.P521()
		default:
			return nil, fmt.Errorf("JWK curve %q not supported", k.Crv)
		}
		x, err := b64("x", k.X)
		if err != nil {
			return nil, err
		}
		y, err := b64("y", k.Y)
		if err != nil {
			return nil, err
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(x) != size || len(y) != size {
			return nil, fmt.Errorf("JWK %s coordinates must be %d bytes", k.Crv, size)
		}
		// crypto/ecdh validates the point; crypto/ecdsa then takes it.
		uncompressed := append(append([]byte{4}, x...), y...)
		if _, err := ec.NewPublicKey(uncompressed); err != nil {
			return nil, fmt.Errorf("JWK %s point is not on the curve", k.Crv)
		}
		return &ecdsa.PublicKey{Curve: curve, X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}, nil
	case "OKP":
		if k.Crv != "Ed25519" {
			return nil, fmt.Errorf("JWK OKP curve %q not supported", k.Crv)
		}
		x, err := b64("x", k.X)
		if err != nil {
			return nil, err
		}
		if len(x) != ed25519.PublicKeySize {
			return nil, errors.New("JWK Ed25519 key must be 32 bytes")
		}
		return ed25519.PublicKey(x), nil
	case "RSA":
		n, err := b64("n", k.N)
		if err != nil {
			return nil, err
		}
		e, err := b64("e", k.E)
		if err != nil {
			return nil, err
		}
		if len(e) > 4 {
			return nil, errors.New("JWK RSA exponent too large")
		}
		ev := int(new(big.Int).SetBytes(e).Int64())
		if ev < 3 || len(n)*8 < 2048 {
			return nil, errors.New("JWK RSA key weaker than 2048 bits or with a bad exponent")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: ev}, nil
	}
	return nil, fmt.Errorf("JWK key type %q not supported", k.Kty)
}
