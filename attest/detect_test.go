package attest

import (
	"errors"
	"testing"

	"github.com/cloisterhq/cloister/internal/corpus"
)

func conformanceFile(t testing.TB, rel string) []byte {
	return corpus.Read(t, "attestation/"+rel)
}

func TestDetectConformance(t *testing.T) {
	t.Parallel()
	cases := map[string]Class{
		"sev-snp/attestation.bin":                          ClassSEVSNP,
		"tdx/tdx_prod_quote_SPR_E4.dat":                    ClassTDX,
		"tdx/quote_v5_sample.dat":                          ClassTDX,
		"dcap/sgx_quote":                                   ClassSGX,
		"dcap/tdx_quote":                                   ClassTDX,
		"dcap/tdx_quote_outdated":                          ClassTDX,
		"nitro/nitrite/nitro_attestation.b64":              ClassNitro,
		"nitro/nitrite/nitro_attestation_debug.b64":        ClassNitro,
		"nitro/nitrite/selfsigned_attestation.b64":         ClassNitro,
		"nitro/evervault/valid-attestation-doc-base64":     ClassNitro,
		"nitro/evervault/valid-attestation-doc-bytes":      ClassNitro,
		"nitro/evervault/debug-mode-attestation-doc-bytes": ClassNitro,
		"tpm/windows_gcp_shielded_vm.json":                 ClassTPM,
		"ra-tls/gramine-cert.pem":                          ClassRATLS,
		"ra-tls/intel-sgxsdk-cert.pem":                     ClassRATLS,
		"ra-tls/rats-tls-cert.pem":                         ClassRATLS,
		"ear/ear_verify_pass.jwt":                          ClassEAR,
		"cca/rmm_legacy_evidence_tag907.cbor":              ClassCCA,
		"cca/cca_token.cbor":                               ClassCCA,
	}
	for rel, want := range cases {
		data, err := DecodeInput(conformanceFile(t, rel))
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		got, err := Detect(data)
		if err != nil || got != want {
			t.Errorf("%s: detected %q (%v), want %q", rel, got, err, want)
		}
	}
	for _, rel := range []string{"nitro/nitrite/root.pem", "ear/ear_es256_pub.jwk.json", "dcap/sgx_quote_collateral.json", "sev-snp/vcek.testcer", "tdx/pckcrl", "cca/cca_platform.pub"} {
		data, err := DecodeInput(conformanceFile(t, rel))
		if err != nil {
			continue
		}
		if c, err := Detect(data); !errors.Is(err, ErrUnknownClass) {
			t.Errorf("%s is not evidence, detected %q (%v)", rel, c, err)
		}
	}
}

func TestDecodeInput(t *testing.T) {
	t.Parallel()
	if _, err := DecodeInput(nil); !errors.Is(err, ErrMalformed) {
		t.Fatal("empty input accepted")
	}
	if _, err := DecodeInput([]byte(" \n")); !errors.Is(err, ErrMalformed) {
		t.Fatal("white space accepted")
	}
	b, _ := DecodeInput([]byte("AQID\n"))
	if string(b) != "\x01\x02\x03" {
		t.Fatalf("base64: %x", b)
	}
	raw := []byte{0xd2, 0x84, 0x40}
	if b, _ := DecodeInput(raw); string(b) != string(raw) {
		t.Fatal("binary input altered")
	}
	if b, _ := DecodeInput([]byte("  {\"a\":1}\n")); string(b) != `{"a":1}` {
		t.Fatalf("JSON: %q", b)
	}
}

func FuzzDetect(f *testing.F) {
	for _, rel := range []string{"sev-snp/attestation.bin", "dcap/sgx_quote", "nitro/nitrite/nitro_attestation.b64", "ear/ear_verify_pass.jwt", "cca/cca_token.cbor", "ra-tls/gramine-cert.pem", "tpm/windows_gcp_shielded_vm.json"} {
		f.Add(conformanceFile(f, rel))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := DecodeInput(data)
		if err != nil {
			return
		}
		_, _ = Detect(d)
	})
}
