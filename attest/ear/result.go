package ear

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/cloisterhq/cloister/attest"
)

// Profile is the EAR profile this package speaks.
const Profile = "tag:github.com,2023:veraison/ear"

// Statuses, from best to worst (AR4SI tiers).
const (
	StatusAffirming       = "affirming"
	StatusWarning         = "warning"
	StatusContraindicated = "contraindicated"
	StatusNone            = "none"
)

// VerifierID names the software that produced a result.
type VerifierID struct {
	Build     string `json:"build"`
	Developer string `json:"developer"`
}

// Submod is the appraisal of one attested component.
type Submod struct {
	Status            string          `json:"ear.status"`
	TrustVector       TrustVector     `json:"ear.trustworthiness-vector,omitempty"`
	AppraisalPolicyID string          `json:"ear.appraisal-policy-id,omitempty"`
	Cloister          *CloisterClaims `json:"cloister,omitempty"`
}

// TrustVector is an AR4SI trustworthiness vector: claim name → value
// (0 no claim, 2..31 affirming, 32..95 warning, 96..127 contraindicated;
// negative values are the same tiers for verifier-internal reasons).
type TrustVector map[string]int8

// CloisterClaims are Cloister's verified claims as they travel in an EAR
// (byte strings hex-encoded).
type CloisterClaims struct {
	Class             attest.Class      `json:"class"`
	Format            string            `json:"format"`
	Measurement       string            `json:"measurement"`
	Measurements      map[string]string `json:"measurements,omitempty"`
	ReportData        string            `json:"report_data"`
	Nonce             string            `json:"nonce,omitempty"`
	PublicKey         string            `json:"public_key,omitempty"`
	HardwareProtected bool              `json:"hardware_protected"`
	Debug             bool              `json:"debug"`
	TCBStatus         string            `json:"tcb_status,omitempty"`
	Advisories        []string          `json:"advisories,omitempty"`
	Warnings          []string          `json:"warnings,omitempty"`
}

// Result is an EAR's claims set.
type Result struct {
	Profile    string            `json:"eat_profile"`
	IssuedAt   int64             `json:"iat"`
	Expires    int64             `json:"exp,omitempty"`
	Nonce      string            `json:"eat_nonce,omitempty"` // base64url, as EAT JSON writes nonces
	VerifierID VerifierID        `json:"ear.verifier-id"`
	Submods    map[string]Submod `json:"submods"`
}

// tierOf maps a trust-vector value to its status tier.
func tierOf(v int8) string {
	a := int(v)
	if a < 0 {
		a = -a
	}
	switch {
	case a >= 96:
		return StatusContraindicated
	case a >= 32:
		return StatusWarning
	case a >= 2:
		return StatusAffirming
	}
	return StatusNone
}

var statusRank = map[string]int{StatusNone: 0, StatusAffirming: 1, StatusWarning: 2, StatusContraindicated: 3}

// worse returns the worse of two statuses.
func worse(a, b string) string {
	if statusRank[b] > statusRank[a] {
		return b
	}
	return a
}

// AppraiseClaims turns verified claims and the outcome of validating them
// against reference values into an EAR submodule. validationErr is what
// attest.Validate returned; measurementChecked says whether the reference
// values held a measurement allow-list (otherwise "executables" makes no
// claim).
func AppraiseClaims(c *attest.Claims, validationErr error, measurementChecked bool) Submod {
	tv := TrustVector{"instance-identity": 2}
	switch {
	case c.Debug:
		tv["hardware"] = 32 // unsafe: debug lets the host read the isolate
	case c.HardwareProtected:
		tv["hardware"] = 2 // genuine
	}
	if c.HardwareProtected && !c.Debug {
		tv["runtime-opaque"] = 2 // encrypted memory
	} else {
		tv["runtime-opaque"] = 32 // isolated from peers, visible to the operator
	}
	switch c.TCBStatus {
	case "":
	case "UpToDate":
		tv["configuration"] = 2
	case "Revoked":
		tv["configuration"] = 96
	default:
		tv["configuration"] = 32
	}
	if measurementChecked {
		tv["executables"] = 2
	}
	if validationErr != nil {
		switch {
		case errors.Is(validationErr, attest.ErrMeasurement):
			tv["executables"] = 96
		case errors.Is(validationErr, attest.ErrDebug), errors.Is(validationErr, attest.ErrTCB):
			tv["configuration"] = 96
		default:
			tv["instance-identity"] = 96
		}
	}
	status := StatusAffirming
	for _, v := range tv {
		status = worse(status, tierOf(v))
	}
	return Submod{Status: status, TrustVector: tv, Cloister: exportClaims(c)}
}

func exportClaims(c *attest.Claims) *CloisterClaims {
	out := &CloisterClaims{
		Class: c.Class, Format: c.Format,
		Measurement: hex.EncodeToString(c.Measurement), ReportData: hex.EncodeToString(c.ReportData),
		Nonce: hex.EncodeToString(c.Nonce), PublicKey: hex.EncodeToString(c.PublicKey),
		HardwareProtected: c.HardwareProtected, Debug: c.Debug, TCBStatus: c.TCBStatus,
		Advisories: c.Advisories, Warnings: c.Warnings,
	}
	if len(c.Measurements) > 0 {
		out.Measurements = map[string]string{}
		for k, v := range c.Measurements {
			out.Measurements[k] = hex.EncodeToString(v)
		}
	}
	return out
}

// Issue signs result as an EAR JWT with signer (ECDSA P-256 → ES256,
// P-384 → ES384, Ed25519 → EdDSA). It fills Profile, and IssuedAt when
// zero.
func Issue(result *Result, signer crypto.Signer, now time.Time) (string, error) {
	if len(result.Submods) == 0 {
		return "", errors.New("EAR: a result needs at least one submodule")
	}
	r := *result
	r.Profile = Profile
	if r.IssuedAt == 0 {
		r.IssuedAt = now.Unix()
	}
	for name, s := range r.Submods {
		if _, ok := statusRank[s.Status]; !ok {
			return "", fmt.Errorf("EAR: submodule %q has status %q", name, s.Status)
		}
	}
	payload, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	return signJWS(payload, signer)
}

// NonceString encodes a nonce for Result.Nonce.
func NonceString(nonce []byte) string { return base64.RawURLEncoding.EncodeToString(nonce) }

// Verify checks an EAR token's signature against the pinned verifier keys
// and its claims set: profile, iat, verifier id, submodules with valid
// statuses, and exp (if present) against now.
func Verify(token []byte, keys []crypto.PublicKey, now time.Time) (*Result, error) {
	payload, _, err := verifyJWS(token, keys)
	if err != nil {
		return nil, err
	}
	return parseResult(payload, now)
}

func parseResult(payload []byte, now time.Time) (*Result, error) {
	var raw map[string]json.RawMessage
	if err := strictJSON(payload, &raw); err != nil {
		return nil, fmt.Errorf("%w: EAR claims: %v", attest.ErrMalformed, err)
	}
	for _, k := range []string{"eat_profile", "iat", "ear.verifier-id", "submods"} {
		if _, ok := raw[k]; !ok {
			return nil, fmt.Errorf("%w: EAR claims lack %q", attest.ErrMalformed, k)
		}
	}
	var r Result
	if err := json.Unmarshal(payload, &r); err != nil {
		return nil, fmt.Errorf("%w: EAR claims: %v", attest.ErrMalformed, err)
	}
	if r.Profile != Profile {
		return nil, fmt.Errorf("%w: EAR profile %q, want %q", attest.ErrMalformed, r.Profile, Profile)
	}
	if r.IssuedAt <= 0 {
		return nil, fmt.Errorf("%w: EAR iat %d", attest.ErrMalformed, r.IssuedAt)
	}
	if r.VerifierID.Build == "" || r.VerifierID.Developer == "" {
		return nil, fmt.Errorf("%w: EAR verifier id needs build and developer", attest.ErrMalformed)
	}
	if len(r.Submods) == 0 {
		return nil, fmt.Errorf("%w: EAR has no submodules", attest.ErrMalformed)
	}
	for name, s := range r.Submods {
		if _, ok := statusRank[s.Status]; !ok {
			return nil, fmt.Errorf("%w: EAR submodule %q status %q", attest.ErrMalformed, name, s.Status)
		}
	}
	if r.Expires != 0 && !now.Before(time.Unix(r.Expires, 0)) {
		return nil, fmt.Errorf("%w: EAR expired at %s", attest.ErrExpired, time.Unix(r.Expires, 0).UTC().Format(time.RFC3339))
	}
	if time.Unix(r.IssuedAt, 0).After(now.Add(5 * time.Minute)) {
		return nil, fmt.Errorf("%w: EAR issued at %s, after the verification time", attest.ErrExpired, time.Unix(r.IssuedAt, 0).UTC().Format(time.RFC3339))
	}
	return &r, nil
}

// Status is the worst status over all submodules.
func (r *Result) Status() string {
	s := StatusNone
	for _, m := range r.Submods {
		s = worse(s, m.Status)
	}
	return s
}

// Verifier registers EAR tokens as the "ear" class: a verified, affirming
// or warning result becomes Claims; a contraindicated one is refused with
// attest.ErrTCB.
type Verifier struct{}

func init() { attest.Register(Verifier{}) }

// Class returns attest.ClassEAR.
func (Verifier) Class() attest.Class { return attest.ClassEAR }

// Verify checks the token against opts.TrustedKeys (ECDSA P-256/P-384 or
// Ed25519 verifier keys) at opts.Time().
func (Verifier) Verify(ctx context.Context, ev *attest.Evidence, opts attest.VerifyOptions) (*attest.Claims, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: no evidence", attest.ErrMalformed)
	}
	token := ev.Data
	payload, key, err := verifyJWS(token, opts.TrustedKeys)
	if err != nil {
		return nil, err
	}
	r, err := parseResult(payload, opts.Time())
	if err != nil {
		return nil, err
	}
	status := r.Status()
	switch status {
	case StatusContraindicated:
		return nil, fmt.Errorf("%w: the EAR's verifier judged the attester contraindicated", attest.ErrTCB)
	case StatusNone:
		// "none" means the verifier could not appraise anything; a relying
		// party with default reference values must not take it for a pass.
		return nil, fmt.Errorf("%w: the EAR's verifier made no appraisal (status none in every submodule)", attest.ErrTCB)
	}
	c := &attest.Claims{
		Class:      attest.ClassEAR,
		Format:     "ear-jwt",
		TCBStatus:  status,
		Advisories: []string{},
		Warnings:   []string{},
		IssuedAt:   time.Unix(r.IssuedAt, 0).UTC(),
		Signer:     keyName(key) + " (" + r.VerifierID.Developer + " " + r.VerifierID.Build + ")",
		Extra:      map[string]any{"ear.status": status, "eat_profile": r.Profile},
	}
	// The EAR's own eat_nonce is what makes the result fresh for the
	// relying party that asked for it, so it is Claims.Nonce; the
	// attester's nonce (inside the Cloister claims) is kept in Extra.
	if r.Nonce != "" {
		if n, err := base64.RawURLEncoding.DecodeString(r.Nonce); err == nil {
			c.Nonce = n
		} else {
			c.Nonce = []byte(r.Nonce)
		}
	}
	names := make([]string, 0, len(r.Submods))
	for n := range r.Submods {
		names = append(names, n)
	}
	sort.Strings(names)
	subs := map[string]any{}
	for _, n := range names {
		s := r.Submods[n]
		subs[n] = map[string]any{"status": s.Status, "trustworthiness_vector": s.TrustVector}
		switch s.Status {
		case StatusWarning:
			c.Warnings = append(c.Warnings, fmt.Sprintf("EAR submodule %q: status warning", n))
		case StatusNone:
			c.Warnings = append(c.Warnings, fmt.Sprintf("EAR submodule %q: status none (not appraised)", n))
		}
		// The first submodule carrying Cloister claims supplies the
		// measurement and report data.
		if cc := s.Cloister; cc != nil && c.Measurement == nil {
			var err error
			dec := func(field, v string) []byte {
				b, e := hex.DecodeString(v)
				if e != nil && err == nil {
					err = fmt.Errorf("%w: EAR submodule %q cloister.%s is not hex: %v", attest.ErrMalformed, n, field, e)
				}
				return b
			}
			c.Measurement = dec("measurement", cc.Measurement)
			if c.Measurement == nil {
				c.Measurement = []byte{}
			}
			c.ReportData = dec("report_data", cc.ReportData)
			if cc.Nonce != "" {
				an := dec("nonce", cc.Nonce)
				c.Extra["attester_nonce"] = hex.EncodeToString(an)
				if c.Nonce == nil {
					c.Nonce = an
				}
			}
			c.PublicKey = dec("public_key", cc.PublicKey)
			var ms map[string][]byte
			if len(cc.Measurements) > 0 {
				ms = map[string][]byte{}
				for k, v := range cc.Measurements {
					ms[k] = dec("measurements."+k, v)
				}
			}
			if err != nil {
				return nil, err
			}
			c.Measurements = ms
			c.HardwareProtected = cc.HardwareProtected
			c.Debug = cc.Debug
			if cc.TCBStatus != "" {
				c.Extra["attester_tcb_status"] = cc.TCBStatus
			}
			c.Advisories = append(c.Advisories, cc.Advisories...)
			c.Warnings = append(c.Warnings, cc.Warnings...)
			c.Extra["attester_class"] = string(cc.Class)
		}
	}
	c.Extra["submods"] = subs
	return c, nil
}

func keyName(k crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return "verifier key"
	}
	return "verifier key " + hex.EncodeToString(der[len(der)-8:])
}

// ParseSigningKey reads a verifier's signing key: a PEM "PRIVATE KEY"
// (PKCS#8) or "EC PRIVATE KEY", or a private JWK (EC P-256/P-384 with "d",
// or OKP Ed25519 with "d").
func ParseSigningKey(data []byte) (crypto.Signer, error) {
	if blk, _ := pem.Decode(data); blk != nil {
		var k any
		var err error
		switch blk.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		default:
			return nil, fmt.Errorf("EAR signing key: PEM block %q", blk.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("EAR signing key: %v", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("EAR signing key: %T cannot sign", k)
		}
		if _, err := algFor(s.Public()); err != nil {
			return nil, fmt.Errorf("EAR signing key: %v", err)
		}
		return s, nil
	}
	var j attest.JWK
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("EAR signing key: neither PEM nor JWK: %v", err)
	}
	d, err := base64.RawURLEncoding.DecodeString(j.D)
	if err != nil || len(d) == 0 {
		return nil, errors.New("EAR signing key: JWK has no private member \"d\"")
	}
	j.D = ""
	pub, err := j.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("EAR signing key: %v", err)
	}
	switch pk := pub.(type) {
	case *ecdsa.PublicKey:
		priv, err := ecdsa.ParseRawPrivateKey(pk.Curve, d)
		if err != nil {
			return nil, fmt.Errorf("EAR signing key: %v", err)
		}
		if !priv.PublicKey.Equal(pk) {
			return nil, errors.New("EAR signing key: JWK \"d\" does not match \"x\", \"y\"")
		}
		return priv, nil
	case ed25519.PublicKey:
		if len(d) != ed25519.SeedSize {
			return nil, errors.New("EAR signing key: Ed25519 \"d\" must be 32 bytes")
		}
		priv := ed25519.NewKeyFromSeed(d)
		if !priv.Public().(ed25519.PublicKey).Equal(pk) {
			return nil, errors.New("EAR signing key: JWK \"d\" does not match \"x\"")
		}
		return priv, nil
	}
	return nil, fmt.Errorf("EAR signing key: %T not supported", pub)
}
