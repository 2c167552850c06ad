package attesthw

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	tdxverify "github.com/google/go-tdx-guest/verify"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/ratls"
	"github.com/cloisterhq/cloister/attest/roots"
	_ "github.com/cloisterhq/cloister/attest/sevsnp"
	_ "github.com/cloisterhq/cloister/attest/sgx"
	"github.com/cloisterhq/cloister/attest/software"
	_ "github.com/cloisterhq/cloister/attest/tdx"
	"github.com/cloisterhq/cloister/internal/corpus"
)

func read(tb testing.TB, rel string) []byte {
	return corpus.Read(tb, "attestation/"+rel)
}

var (
	at2024 = time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	at2025 = time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)
	at2023 = time.Date(2023, 7, 1, 0, 0, 0, 0, time.UTC)
)

// benchVerify verifies ev in a loop and reports verifications per second.
func benchVerify(b *testing.B, ev *attest.Evidence, opts attest.VerifyOptions) {
	b.Helper()
	ctx := context.Background()
	if _, err := attest.Verify(ctx, ev, opts); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := attest.Verify(ctx, ev, opts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
}

// SEV-SNP: ECDSA-P384 report signature, VCEK→ASK→ARK (RSA-PSS 4096) chain,
// go-sev-guest validate.
func BenchmarkVerifySEVSNP(b *testing.B) {
	benchVerify(b, &attest.Evidence{Class: attest.ClassSEVSNP, Data: read(b, "sev-snp/attestation.bin"),
		Collateral: [][]byte{read(b, "sev-snp/vcek.testcer"), read(b, "sev-snp/ask_ark_milan.pem")}}, attest.VerifyOptions{Now: at2024, AllowDebug: true})
}

// SGX quote v3 with full collateral: quote, QE report, PCK chain, two CRLs,
// TCB info and QE identity signatures and chains, TCB level.
func BenchmarkVerifySGXWithCollateral(b *testing.B) {
	benchVerify(b, &attest.Evidence{Class: attest.ClassSGX, Data: read(b, "dcap/sgx_quote"),
		Collateral: [][]byte{read(b, "dcap/sgx_quote_collateral.json")}}, attest.VerifyOptions{Now: at2025})
}

// TDX quote v4 with full collateral (the case Trustee reports ~13–15 ms for).
func BenchmarkVerifyTDXWithCollateral(b *testing.B) {
	benchVerify(b, &attest.Evidence{Class: attest.ClassTDX, Data: read(b, "dcap/tdx_quote"),
		Collateral: [][]byte{read(b, "dcap/tdx_quote_collateral.json")}}, attest.VerifyOptions{Now: at2025})
}

// TDX quote v4, quote signature + QE report + PCK chain only (ours).
func BenchmarkVerifyTDXQuoteOnly(b *testing.B) {
	benchVerify(b, &attest.Evidence{Class: attest.ClassTDX, Data: read(b, "tdx/tdx_prod_quote_SPR_E4.dat")}, attest.VerifyOptions{Now: at2023})
}

// The same checks by go-tdx-guest, as a peer in the same run.
func BenchmarkVerifyTDXQuoteOnlyGoTDXGuest(b *testing.B) {
	raw := read(b, "tdx/tdx_prod_quote_SPR_E4.dat")
	pool := x509.NewCertPool()
	pool.AddCert(roots.IntelSGXRoot())
	opts := func() *tdxverify.Options {
		return &tdxverify.Options{TrustedRoots: pool, Now: &tdxverify.TimeSet{PckCertChain: at2023, TcbInfo: at2023, QeIdentity: at2023, PckCrl: at2023, RootCaCrl: at2023}}
	}
	if err := tdxverify.RawTdxQuote(raw, opts()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := tdxverify.RawTdxQuote(raw, opts()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
}

// RA-TLS: certificate self-signature, pubkey-hash, claims hash, SGX quote.
func BenchmarkVerifyRATLSGramine(b *testing.B) {
	benchVerify(b, &attest.Evidence{Class: attest.ClassRATLS, Data: read(b, "ra-tls/gramine-cert.pem")}, attest.VerifyOptions{AllowDebug: true})
}

// RA-TLS certificate issue for a fresh P-256 session key with software
// evidence (attest + sign), then its verification.
func BenchmarkIssueRATLSSoftware(b *testing.B) {
	_, platform, _ := ed25519.GenerateKey(rand.Reader)
	att, err := software.NewAttester(platform, software.WithMeasurement(sha256.Sum256([]byte("bench"))))
	if err != nil {
		b.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ratls.Issue(context.Background(), key, att, nil, now, now.Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyRATLSSoftware(b *testing.B) {
	_, platform, _ := ed25519.GenerateKey(rand.Reader)
	att, _ := software.NewAttester(platform, software.WithMeasurement(sha256.Sum256([]byte("bench"))))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	_, der, err := ratls.Issue(context.Background(), key, att, nil, now.Add(-time.Minute), now.Add(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	benchVerify(b, &attest.Evidence{Class: attest.ClassRATLS, Data: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})},
		attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{platform.Public()}})
}
