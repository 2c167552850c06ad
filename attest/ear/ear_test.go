package ear

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/internal/corpus"
)

func conformance(t testing.TB, rel string) []byte {
	return corpus.Read(t, "attestation/"+rel)
}

func veraisonKey(t testing.TB) crypto.PublicKey {
	t.Helper()
	keys, err := attest.ParseJWKs(conformance(t, "ear/ear_es256_pub.jwk.json"))
	if err != nil || len(keys) != 1 {
		t.Fatal(err)
	}
	return keys[0]
}

func veraisonToken(t testing.TB) []byte {
	return bytes.TrimSpace(conformance(t, "ear/ear_verify_pass.jwt"))
}

func verifyEv(token []byte, keys ...crypto.PublicKey) (*attest.Claims, error) {
	return attest.Verify(context.Background(), &attest.Evidence{Class: attest.ClassEAR, Data: token}, attest.VerifyOptions{TrustedKeys: keys})
}

func TestVeraisonToken(t *testing.T) {
	tok := veraisonToken(t)
	if c, err := attest.Detect(tok); err != nil || c != attest.ClassEAR {
		t.Fatalf("detect %v %v", c, err)
	}
	r, err := Verify(tok, []crypto.PublicKey{veraisonKey(t)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r.Status() != StatusAffirming || r.IssuedAt != 1666091373 || r.Profile != Profile {
		t.Fatalf("result %+v", r)
	}
	if r.VerifierID.Developer != "Acme Inc." || r.Submods["test"].AppraisalPolicyID != "policy://test/01234" {
		t.Fatalf("result %+v", r)
	}
	c, err := verifyEv(tok, veraisonKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.TCBStatus != StatusAffirming || c.IssuedAt.Unix() != 1666091373 || c.Class != attest.ClassEAR {
		t.Fatalf("claims %+v", c)
	}
}

func hs256Token(t *testing.T, payload []byte, secret []byte) []byte {
	in := b64.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + b64.EncodeToString(payload)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(in))
	return []byte(in + "." + b64.EncodeToString(m.Sum(nil)))
}

func TestVeraisonTokenAttacks(t *testing.T) {
	tok := veraisonToken(t)
	key := veraisonKey(t)
	parts := strings.Split(string(tok), ".")
	payload, _ := b64.DecodeString(parts[1])
	flip := func(s string, i int) string {
		b, _ := b64.DecodeString(s)
		b[i] ^= 1
		return b64.EncodeToString(b)
	}
	pub := key.(*ecdsa.PublicKey)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cases := []struct {
		name string
		tok  []byte
		keys []crypto.PublicKey
		want error
	}{
		{"flipped payload", []byte(parts[0] + "." + flip(parts[1], 30) + "." + parts[2]), []crypto.PublicKey{key}, attest.ErrSignature},
		{"flipped signature", []byte(parts[0] + "." + parts[1] + "." + flip(parts[2], 10)), []crypto.PublicKey{key}, attest.ErrSignature},
		{"alg none", []byte(b64.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + "."), []crypto.PublicKey{key}, attest.ErrSignature},
		{"HS256 keyed with the public key", hs256Token(t, payload, elliptic.MarshalCompressed(pub.Curve, pub.X, pub.Y)), []crypto.PublicKey{key}, attest.ErrSignature},
		{"trailing part", append(append([]byte(nil), tok...), []byte(".e30")...), []crypto.PublicKey{key}, attest.ErrMalformed},
		{"trailing bytes", append(append([]byte(nil), tok...), []byte("AAAA")...), []crypto.PublicKey{key}, attest.ErrSignature},
		{"trailing garbage", append(append([]byte(nil), tok...), []byte("!")...), []crypto.PublicKey{key}, attest.ErrMalformed},
		{"two parts", []byte(parts[0] + "." + parts[1]), []crypto.PublicKey{key}, attest.ErrMalformed},
		{"padded base64", []byte(parts[0] + "." + parts[1] + "." + parts[2] + "=="), []crypto.PublicKey{key}, attest.ErrMalformed},
		{"wrong key", tok, []crypto.PublicKey{&other.PublicKey}, attest.ErrSignature},
		{"no key", tok, nil, attest.ErrUntrustedSigner},
		{"Ed25519 key only", tok, []crypto.PublicKey{ed25519.PublicKey(make([]byte, 32))}, attest.ErrUntrustedSigner},
		{"crit header", []byte(b64.EncodeToString([]byte(`{"alg":"ES256","crit":["x"]}`)) + "." + parts[1] + "." + parts[2]), []crypto.PublicKey{key}, attest.ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verifyEv(tc.tok, tc.keys...)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestIssueAndVerify(t *testing.T) {
	es256, err := ParseSigningKey(conformance(t, "ear/skey.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !es256.Public().(*ecdsa.PublicKey).Equal(veraisonKey(t)) {
		t.Fatal("skey.json does not match the public JWK")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	claims := &attest.Claims{
		Class: attest.ClassNitro, Format: "nitro-attestation-document", Measurement: []byte{1, 2, 3},
		ReportData: bytes.Repeat([]byte{9}, 64), HardwareProtected: true, Advisories: []string{}, Warnings: []string{},
	}
	for name, signer := range map[string]crypto.Signer{"ES256": es256, "ES384": p384, "EdDSA": ed} {
		t.Run(name, func(t *testing.T) {
			sub := AppraiseClaims(claims, nil, true)
			if sub.Status != StatusAffirming || sub.TrustVector["executables"] != 2 || sub.TrustVector["runtime-opaque"] != 2 {
				t.Fatalf("appraisal %+v", sub)
			}
			tok, err := Issue(&Result{Nonce: NonceString([]byte("fresh")), VerifierID: VerifierID{Build: "cloister test", Developer: "cloister"}, Submods: map[string]Submod{"isolate": sub}}, signer, now)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(mustHeader(t, tok)), `"alg":"`+name+`"`) {
				t.Fatalf("header %s", mustHeader(t, tok))
			}
			c, err := attest.Verify(context.Background(), &attest.Evidence{Class: attest.ClassEAR, Data: []byte(tok)}, attest.VerifyOptions{Now: now, TrustedKeys: []crypto.PublicKey{signer.Public()}})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(c.Measurement, []byte{1, 2, 3}) || !bytes.Equal(c.ReportData, claims.ReportData) || string(c.Nonce) != "fresh" || c.TCBStatus != StatusAffirming || !c.HardwareProtected {
				t.Fatalf("claims %+v", c)
			}
		})
	}

	// Software claims: warning (memory visible to the operator).
	sw := &attest.Claims{Class: attest.ClassSoftware, Measurement: []byte{1}, ReportData: make([]byte, 64)}
	if s := AppraiseClaims(sw, nil, false); s.Status != StatusWarning {
		t.Fatalf("software appraisal %+v", s)
	}
	// A failed validation is contraindicated, and the verifier refuses it.
	bad := AppraiseClaims(claims, attest.ErrMeasurement, true)
	if bad.Status != StatusContraindicated || bad.TrustVector["executables"] != 96 {
		t.Fatalf("bad appraisal %+v", bad)
	}
	tok, err := Issue(&Result{VerifierID: VerifierID{Build: "b", Developer: "d"}, Submods: map[string]Submod{"x": bad}}, es256, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.Verify(context.Background(), &attest.Evidence{Class: attest.ClassEAR, Data: []byte(tok)}, attest.VerifyOptions{Now: now, TrustedKeys: []crypto.PublicKey{es256.Public()}}); !errors.Is(err, attest.ErrTCB) {
		t.Fatalf("contraindicated: %v", err)
	}
	// Expiry.
	tok, _ = Issue(&Result{Expires: now.Add(time.Minute).Unix(), VerifierID: VerifierID{Build: "b", Developer: "d"}, Submods: map[string]Submod{"x": AppraiseClaims(claims, nil, false)}}, es256, now)
	if _, err := Verify([]byte(tok), []crypto.PublicKey{es256.Public()}, now.Add(2*time.Minute)); !errors.Is(err, attest.ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
}

func mustHeader(t *testing.T, tok string) []byte {
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseSigningKeyRefusesMismatch(t *testing.T) {
	j := strings.Replace(string(conformance(t, "ear/skey.json")), "V8kgd2ZBRuh2dgyVINBUqpPDr7BOMGcF22CQMIUHtNM", "W8kgd2ZBRuh2dgyVINBUqpPDr7BOMGcF22CQMIUHtNM", 1)
	if _, err := ParseSigningKey([]byte(j)); err == nil {
		t.Fatal("mismatched d accepted")
	}
	if _, err := ParseSigningKey(conformance(t, "ear/pkey.json")); err == nil {
		t.Fatal("public JWK accepted as a signing key")
	}
}

func FuzzVerify(f *testing.F) {
	f.Add(veraisonToken(f))
	f.Add([]byte("eyJhbGciOiJub25lIn0.e30."))
	f.Add([]byte("a.b.c"))
	key := veraisonKey(f)
	f.Fuzz(func(t *testing.T, tok []byte) {
		r, err := Verify(tok, []crypto.PublicKey{key}, time.Now())
		if err == nil && (r.Profile != Profile || len(r.Submods) == 0) {
			t.Fatalf("accepted %+v", r)
		}
	})
}

func FuzzParseResult(f *testing.F) {
	parts := strings.Split(string(veraisonToken(f)), ".")
	p, _ := b64.DecodeString(parts[1])
	f.Add(p)
	f.Add(conformance(f, "ear/ear-claims.json"))
	f.Fuzz(func(t *testing.T, payload []byte) {
		r, err := parseResult(payload, time.Now())
		if err == nil {
			_ = r.Status()
		}
	})
}

// TestVeraisonTokenOutOfWindow: the token has no exp; verifying it at a
// time before its iat (2022-10-18T11:09:33Z, beyond the 5 minutes of clock
// skew allowed) is refused as outside its validity window.
func TestVeraisonTokenOutOfWindow(t *testing.T) {
	tok := veraisonToken(t)
	key := veraisonKey(t)
	iat := time.Unix(1666091373, 0)
	for _, at := range []time.Time{iat.Add(-6 * time.Minute), time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)} {
		_, err := attest.Verify(context.Background(), &attest.Evidence{Class: attest.ClassEAR, Data: tok}, attest.VerifyOptions{Now: at, TrustedKeys: []crypto.PublicKey{key}})
		if !errors.Is(err, attest.ErrExpired) || !strings.Contains(err.Error(), "2022-10-18T11:09:33Z") {
			t.Errorf("at %s: %v, want ErrExpired naming the iat", at, err)
		}
	}
	// Within the skew it verifies.
	if _, err := attest.Verify(context.Background(), &attest.Evidence{Class: attest.ClassEAR, Data: tok}, attest.VerifyOptions{Now: iat.Add(-4 * time.Minute), TrustedKeys: []crypto.PublicKey{key}}); err != nil {
		t.Errorf("within clock skew: %v", err)
	}
}

// TestStatusNoneAndNonces covers what the verifier makes of a result
// beyond its signature: a result nobody appraised is refused; a submodule
// not appraised is a warning; the EAR's eat_nonce, not the attester's
// nonce, is Claims.Nonce; Cloister claims that are not hex are refused
// with the field named.
func TestStatusNoneAndNonces(t *testing.T) {
	signer, err := ParseSigningKey(conformance(t, "ear/skey.json"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	opts := attest.VerifyOptions{Now: now, TrustedKeys: []crypto.PublicKey{signer.Public()}}
	vid := VerifierID{Build: "b", Developer: "d"}
	verifyResult := func(r *Result) (*attest.Claims, error) {
		tok, err := Issue(r, signer, now)
		if err != nil {
			t.Fatal(err)
		}
		return attest.Verify(context.Background(), &attest.Evidence{Class: attest.ClassEAR, Data: []byte(tok)}, opts)
	}

	if _, err := verifyResult(&Result{VerifierID: vid, Submods: map[string]Submod{"a": {Status: StatusNone}, "b": {Status: StatusNone}}}); !errors.Is(err, attest.ErrTCB) || !strings.Contains(err.Error(), "no appraisal") {
		t.Errorf("all submodules none: %v, want ErrTCB", err)
	}

	nitro := &attest.Claims{Class: attest.ClassNitro, Measurement: []byte{1, 2, 3}, ReportData: bytes.Repeat([]byte{9}, 64), Nonce: []byte{0xaa, 0xbb}, HardwareProtected: true}
	c, err := verifyResult(&Result{Nonce: NonceString([]byte("rp-nonce")), VerifierID: vid, Submods: map[string]Submod{
		"isolate": AppraiseClaims(nitro, nil, true),
		"other":   {Status: StatusNone},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if c.TCBStatus != StatusAffirming || string(c.Nonce) != "rp-nonce" || c.Extra["attester_nonce"] != "aabb" {
		t.Errorf("status %q nonce %q attester_nonce %v", c.TCBStatus, c.Nonce, c.Extra["attester_nonce"])
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], `"other": status none`) {
		t.Errorf("warnings %q", c.Warnings)
	}
	if err := attest.Validate(c, attest.ReferenceValues{Nonce: []byte{0xaa, 0xbb}}, now); !errors.Is(err, attest.ErrNonce) {
		t.Errorf("the attester's nonce must not pass for the EAR's: %v", err)
	}

	// Without eat_nonce the attester's nonce is all there is.
	c, err = verifyResult(&Result{VerifierID: vid, Submods: map[string]Submod{"isolate": AppraiseClaims(nitro, nil, true)}})
	if err != nil || !bytes.Equal(c.Nonce, []byte{0xaa, 0xbb}) {
		t.Errorf("no eat_nonce: nonce %x, %v", c.Nonce, err)
	}

	for field, edit := range map[string]func(cc *CloisterClaims){
		"measurement":       func(cc *CloisterClaims) { cc.Measurement = "zz" },
		"report_data":       func(cc *CloisterClaims) { cc.ReportData = "0" },
		"measurements.pcr0": func(cc *CloisterClaims) { cc.Measurements = map[string]string{"pcr0": "xyz"} },
	} {
		sub := AppraiseClaims(nitro, nil, true)
		edit(sub.Cloister)
		_, err := verifyResult(&Result{VerifierID: vid, Submods: map[string]Submod{"isolate": sub}})
		if !errors.Is(err, attest.ErrMalformed) || !strings.Contains(err.Error(), "cloister."+field) {
			t.Errorf("bad hex in %s: %v, want ErrMalformed naming it", field, err)
		}
	}
}

// FuzzVerifierClaims signs arbitrary claims sets with a pinned key, so the
// conversion of a verified EAR into Claims (the part a signature does not
// protect against a careless or hostile verifier) is exercised, not only
// the signature check.
func FuzzVerifierClaims(f *testing.F) {
	parts := strings.Split(string(veraisonToken(f)), ".")
	p, _ := b64.DecodeString(parts[1])
	f.Add(p)
	f.Add([]byte(`{"eat_profile":"tag:github.com,2023:veraison/ear","iat":1,"ear.verifier-id":{"build":"b","developer":"d"},"submods":{"x":{"ear.status":"affirming","cloister":{"class":"nitro","format":"f","measurement":"0102","report_data":"zz","hardware_protected":true,"debug":false,"measurements":{"a":"00"}}}}}`))
	f.Add([]byte(`{"eat_profile":"tag:github.com,2023:veraison/ear","iat":1,"eat_nonce":"AAEC","ear.verifier-id":{"build":"b","developer":"d"},"submods":{"x":{"ear.status":"none"}}}`))
	signer, err := ParseSigningKey(conformance(f, "ear/skey.json"))
	if err != nil {
		f.Fatal(err)
	}
	opts := attest.VerifyOptions{Now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), TrustedKeys: []crypto.PublicKey{signer.Public()}}
	f.Fuzz(func(t *testing.T, payload []byte) {
		tok, err := signJWS(payload, signer)
		if err != nil {
			return
		}
		c, err := Verifier{}.Verify(context.Background(), &attest.Evidence{Class: attest.ClassEAR, Data: []byte(tok)}, opts)
		if err == nil && (c.TCBStatus != StatusAffirming && c.TCBStatus != StatusWarning) {
			t.Fatalf("accepted an EAR with status %q", c.TCBStatus)
		}
	})
}
