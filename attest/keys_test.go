package attest

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"strings"
	"testing"
)

func TestParseTrustAnchors(t *testing.T) {
	t.Parallel()
	ta, err := ParseTrustAnchors("jwk", conformanceFile(t, "ear/ear_es256_pub.jwk.json"))
	if err != nil || len(ta.Keys) != 1 {
		t.Fatal(err)
	}
	if k, ok := ta.Keys[0].(*ecdsa.PublicKey); !ok || k.Curve.Params().Name != "P-256" {
		t.Fatalf("%T", ta.Keys[0])
	}
	ta, err = ParseTrustAnchors("root", conformanceFile(t, "nitro/nitrite/root.pem"))
	if err != nil || len(ta.Roots) != 1 || ta.Roots[0].Subject.CommonName != "aws.nitro-enclaves" {
		t.Fatal(err)
	}
	ta, err = ParseTrustAnchors("ark", conformanceFile(t, "sev-snp/ask_ark_milan.pem"))
	if err != nil || len(ta.Roots) != 2 {
		t.Fatal(err)
	}
	ta, err = ParseTrustAnchors("der", conformanceFile(t, "sev-snp/vcek.testcer"))
	if err != nil || len(ta.Roots) != 1 {
		t.Fatal(err)
	}
	ta, err = ParseTrustAnchors("cca", conformanceFile(t, "cca/cca_platform.pub"))
	if err != nil || len(ta.Keys) != 1 {
		t.Fatal(err)
	}
	ta, err = ParseTrustAnchors("ed", []byte("ed25519:"+strings.Repeat("A", 43)+"=\n"))
	if err != nil || len(ta.Keys) != 1 {
		t.Fatal(err)
	}
	if _, ok := ta.Keys[0].(ed25519.PublicKey); !ok {
		t.Fatalf("%T", ta.Keys[0])
	}
	for name, bad := range map[string]string{
		"private JWK":      string(conformanceFile(t, "ear/skey.json")),
		"private PEM":      string(conformanceFile(t, "cca/cca_platform.pem")),
		"JWK off curve":    `{"kty":"EC","crv":"P-256","x":"usWxHK2PmfnHKwXPS54m0kTcGJ90UiglWiGahtagnv8","y":"IBOL-C3BttVivg-lSreASjpkttcsz-1rb7btKLv9EX4"}`,
		"short ed25519":    "ed25519:AAAA",
		"garbage":          "hello",
		"empty":            "",
		"unknown JWK type": `{"kty":"oct","k":"AAAA"}`,
	} {
		if _, err := ParseTrustAnchors(name, []byte(bad)); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func FuzzParseTrustAnchors(f *testing.F) {
	f.Add(conformanceFile(f, "ear/ear_es256_pub.jwk.json"))
	f.Add(conformanceFile(f, "nitro/nitrite/root.pem"))
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = ParseTrustAnchors("fuzz", data)
	})
}
