package cca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/veraison/go-cose"

	"github.com/cloisterhq/cloister/attest"
)

// Format is Claims.Format for CCA tokens.
const Format = "cca-token"

// TestKeySHA256 is the SHA-256 of the SubjectPublicKeyInfo of Arm's public
// CCA platform test key (used by the reference software stack and the
// Veraison test vectors). Its private half is published: a token it signs
// proves nothing.
const TestKeySHA256 = "0928f896cb02326566530a62a1e36329a12d0a4a308f4fc81e8ff5560bca6bca"

// TestKeyWarning is attached to claims from tokens signed with the test key.
const TestKeyWarning = "CCA platform token signed with a TEST key (the Arm reference test key), not by hardware"

// PSA security lifecycle states in which the platform is debuggable
// (PSA Attestation API, security lifecycle claim: major nibble 0x4 =
// recoverable PSA-RoT debug, 0x5 = non-PSA-RoT debug).
func debugLifecycle(lc uint64) bool {
	major := (lc >> 12) & 0xf
	return major == 0x4 || major == 0x5
}

// Verifier checks CCA tokens.
type Verifier struct{}

func init() { attest.Register(Verifier{}) }

// Class returns attest.ClassCCA.
func (Verifier) Class() attest.Class { return attest.ClassCCA }

// Verify checks the platform token's signature with a pinned platform key
// (opts.TrustedKeys), the realm token's signature with the RAK, and the
// binding platform challenge = hash(RAK).
func (Verifier) Verify(ctx context.Context, ev *attest.Evidence, opts attest.VerifyOptions) (*attest.Claims, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: no evidence", attest.ErrMalformed)
	}
	t, err := Parse(ev.Data)
	if err != nil {
		return nil, err
	}
	return t.Verify(opts)
}

// Verify checks a parsed token; see Verifier.Verify.
func (t *Token) Verify(opts attest.VerifyOptions) (*attest.Claims, error) {
	palg, err := t.Platform.Headers.Protected.Algorithm()
	if err != nil {
		return nil, fmt.Errorf("%w: CCA platform token algorithm: %v", attest.ErrMalformed, err)
	}
	var signer crypto.PublicKey
	candidates := 0
	for _, k := range opts.TrustedKeys {
		ek, ok := k.(*ecdsa.PublicKey)
		if !ok {
			continue
		}
		v, err := cose.NewVerifier(palg, ek)
		if err != nil {
			continue
		}
		candidates++
		if t.Platform.Verify(nil, v) == nil {
			signer = ek
			break
		}
	}
	if signer == nil {
		if candidates == 0 {
			return nil, fmt.Errorf("%w: no pinned ECDSA platform key for the CCA platform token (%v)", attest.ErrUntrustedSigner, palg)
		}
		return nil, fmt.Errorf("%w: the CCA platform token does not verify with any of the %d pinned platform keys", attest.ErrSignature, candidates)
	}

	ralg, err := t.Realm.Headers.Protected.Algorithm()
	if err != nil {
		return nil, fmt.Errorf("%w: CCA realm token algorithm: %v", attest.ErrMalformed, err)
	}
	rv, err := cose.NewVerifier(ralg, t.RAK)
	if err != nil {
		return nil, fmt.Errorf("%w: CCA realm token algorithm %v does not fit the RAK: %v", attest.ErrSignature, ralg, err)
	}
	if err := t.Realm.Verify(nil, rv); err != nil {
		return nil, fmt.Errorf("%w: the CCA realm token does not verify with its RAK: %v", attest.ErrSignature, err)
	}

	var rakHash []byte
	switch t.RealmClaims.RAKHashAlgID {
	case "sha-256":
		s := sha256.Sum256(t.RealmClaims.RAKPub)
		rakHash = s[:]
	case "sha-384":
		s := sha512.Sum384(t.RealmClaims.RAKPub)
		rakHash = s[:]
	case "sha-512":
		s := sha512.Sum512(t.RealmClaims.RAKPub)
		rakHash = s[:]
	default:
		return nil, fmt.Errorf("%w: CCA RAK hash algorithm %q", attest.ErrMalformed, t.RealmClaims.RAKHashAlgID)
	}
	if !bytes.Equal(rakHash, t.PlatformClaims.Challenge) {
		return nil, fmt.Errorf("%w: the CCA platform challenge is not the %s hash of the realm's RAK: the realm token is not bound to this platform", attest.ErrSignature, t.RealmClaims.RAKHashAlgID)
	}

	p, r := &t.PlatformClaims, &t.RealmClaims
	testKey := isTestKey(signer)
	debug := debugLifecycle(p.Lifecycle)
	if debug && !opts.AllowDebug {
		return nil, fmt.Errorf("%w: CCA platform security lifecycle %#x is a debug state", attest.ErrDebug, p.Lifecycle)
	}
	c := &attest.Claims{
		Class:             attest.ClassCCA,
		Format:            Format,
		Measurement:       clone(r.RIM),
		Measurements:      map[string][]byte{"rim": clone(r.RIM), "personalization": clone(r.Personalization), "platform_config": clone(p.Config), "implementation_id": clone(p.ImplementationID)},
		ReportData:        clone(r.Challenge),
		PublicKey:         clone(r.RAKPub),
		HardwareProtected: !testKey,
		Debug:             debug,
		Advisories:        []string{},
		Warnings:          []string{},
		Signer:            "CCA platform key " + keyFingerprint(signer),
		Extra: map[string]any{
			"profile":              p.Profile,
			"lifecycle":            fmt.Sprintf("%#x", p.Lifecycle),
			"instance_id":          hex.EncodeToString(p.InstanceID),
			"hash_algorithm":       r.HashAlgID,
			"verification_service": p.VerificationService,
		},
	}
	for i, rem := range r.REMs {
		c.Measurements["rem"+strconv.Itoa(i)] = clone(rem)
	}
	for i, sw := range p.SWComponents {
		name := sw.Type
		if name == "" {
			name = strconv.Itoa(i)
		}
		c.Measurements["sw:"+name] = clone(sw.Measurement)
	}
	if testKey {
		c.Warnings = append(c.Warnings, TestKeyWarning)
	}
	if debug {
		c.Warnings = append(c.Warnings, "CCA platform is in a debug lifecycle state")
	}
	return c, nil
}

func isTestKey(k crypto.PublicKey) bool {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return false
	}
	s := sha256.Sum256(der)
	return hex.EncodeToString(s[:]) == TestKeySHA256
}

func keyFingerprint(k crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return "?"
	}
	s := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(s[:8])
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}
