package attest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"os/exec"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/attest"
	_ "github.com/cloisterhq/cloister/attest/all"
	"github.com/cloisterhq/cloister/attest/ear"
	"github.com/cloisterhq/cloister/attest/software"
	"github.com/cloisterhq/cloister/attest/tpm"
	"github.com/cloisterhq/cloister/attest/tpm/swtpm"
	"github.com/cloisterhq/cloister/internal/corpus"
)

func conformance(b testing.TB, rel string) []byte {
	b.Helper()
	d, err := attest.DecodeInput(corpus.Read(b, "attestation/"+rel))
	if err != nil {
		b.Fatal(err)
	}
	return d
}

func keysFrom(b testing.TB, rel string) []crypto.PublicKey {
	ta, err := attest.ParseTrustAnchors(rel, conformance(b, rel))
	if err != nil {
		b.Fatal(err)
	}
	return ta.Keys
}

func benchVerify(b *testing.B, ev *attest.Evidence, opts attest.VerifyOptions) {
	b.Helper()
	ctx := context.Background()
	if _, err := attest.Verify(ctx, ev, opts); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := attest.Verify(ctx, ev, opts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
}

var rd = [attest.ReportDataSize]byte{1, 2, 3, 4, 5}

func softwareAttester(b testing.TB) *software.Attester {
	a, err := software.NewAttester(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32)), software.WithMeasurement(sha256.Sum256([]byte("bench"))))
	if err != nil {
		b.Fatal(err)
	}
	return a
}

func BenchmarkVerifySoftware(b *testing.B) {
	a := softwareAttester(b)
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		b.Fatal(err)
	}
	benchVerify(b, ev, attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{a.PublicKey()}})
}

func BenchmarkVerifyNitro(b *testing.B) {
	ev := &attest.Evidence{Class: attest.ClassNitro, Data: conformance(b, "nitro/nitrite/nitro_attestation.b64")}
	at, _ := time.Parse(time.RFC3339Nano, "2024-09-07T14:37:39.545Z")
	benchVerify(b, ev, attest.VerifyOptions{Now: at})
}

func BenchmarkVerifyTPMGoAttestationWithEventLog(b *testing.B) {
	data := conformance(b, "tpm/windows_gcp_shielded_vm.json")
	var g struct{ AK struct{ Public []byte } }
	if err := json.Unmarshal(data, &g); err != nil {
		b.Fatal(err)
	}
	ak, err := tpm.ParseAK(g.AK.Public)
	if err != nil {
		b.Fatal(err)
	}
	benchVerify(b, &attest.Evidence{Class: attest.ClassTPM, Data: data}, attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{ak.Key}})
}

func BenchmarkVerifyEAR(b *testing.B) {
	ev := &attest.Evidence{Class: attest.ClassEAR, Data: conformance(b, "ear/ear_verify_pass.jwt")}
	benchVerify(b, ev, attest.VerifyOptions{TrustedKeys: keysFrom(b, "ear/ear_es256_pub.jwk.json")})
}

func BenchmarkVerifyCCA(b *testing.B) {
	ev := &attest.Evidence{Class: attest.ClassCCA, Data: conformance(b, "cca/rmm_legacy_evidence_tag907.cbor")}
	benchVerify(b, ev, attest.VerifyOptions{TrustedKeys: keysFrom(b, "cca/cca_platform.pub")})
}

func BenchmarkIssueEAR(b *testing.B) {
	signer, err := ear.ParseSigningKey(conformance(b, "ear/skey.json"))
	if err != nil {
		b.Fatal(err)
	}
	a := softwareAttester(b)
	ev, _ := a.Attest(context.Background(), rd)
	c, err := attest.Verify(context.Background(), ev, attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{a.PublicKey()}})
	if err != nil {
		b.Fatal(err)
	}
	sub := ear.AppraiseClaims(c, nil, false)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ear.Issue(&ear.Result{VerifierID: ear.VerifierID{Build: "bench", Developer: "cloister"}, Submods: map[string]ear.Submod{"isolate": sub}}, signer, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAttestSoftware(b *testing.B) {
	a := softwareAttester(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := a.Attest(ctx, rd); err != nil {
			b.Fatal(err)
		}
	}
}

// swtpmAttester starts a private swtpm. Benchmarks skip only when swtpm
// is not installed.
func swtpmAttester(b *testing.B) *tpm.Attester {
	if _, err := exec.LookPath("swtpm"); err != nil {
		b.Skip("swtpm not installed")
	}
	s, err := swtpm.Start(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Stop)
	rwc, err := tpm.Open(s.Spec)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rwc.Close() })
	a, err := tpm.NewAttester(rwc, tpm.WithMeasurement(sha256.Sum256([]byte("bench"))))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(a.Close)
	return a
}

func BenchmarkAttestTPMSwtpm(b *testing.B) {
	a := swtpmAttester(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := a.Attest(ctx, rd); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyTPMSwtpmBundle(b *testing.B) {
	a := swtpmAttester(b)
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		b.Fatal(err)
	}
	ak, err := a.AK()
	if err != nil {
		b.Fatal(err)
	}
	benchVerify(b, ev, attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{ak.Key}})
}
