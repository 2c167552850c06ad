package ratls

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/attest"
)

// FuzzParseExtension: arbitrary extension bytes never panic the CBOR
// decoder or the claims parser.
func FuzzParseExtension(f *testing.F) {
	for _, name := range []string{"gramine-cert.pem", "intel-sgxsdk-cert.pem", "rats-tls-cert.pem"} {
		cert, err := x509.ParseCertificate(certDER(f, name))
		if err != nil {
			f.Fatal(err)
		}
		value := findExtension(cert)
		f.Add(value)
		if ext, err := ParseExtension(value); err == nil {
			f.Add(ext.ClaimsBuffer)
		}
	}
	f.Add([]byte{0xda, 0x43, 0x4c, 0x4f, 0x53, 0x84, 0x63, 't', 'p', 'm', 0x40, 0x40, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseExtension(b)
		_, _ = ParseClaims(b)
	})
}

// FuzzVerifyCertificate: arbitrary DER never panics verification.
func FuzzVerifyCertificate(f *testing.F) {
	f.Add(certDER(f, "gramine-cert.pem"))
	f.Add(certDER(f, "rats-tls-cert.pem"))
	f.Fuzz(func(t *testing.T, der []byte) {
		Sniff(der)
		_, _ = VerifyCertificate(der, attest.VerifyOptions{Now: time.Date(2023, 6, 1, 0, 0, 0, 0, time.UTC), AllowDebug: true})
	})
}
