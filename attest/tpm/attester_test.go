package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/tpm/swtpm"
)

// startTPM runs a private swtpm for the test. It skips only when swtpm is
// not installed (scripts/test installs it).
func startTPM(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm not installed (Debian package swtpm; scripts/test installs it)")
	}
	s, err := swtpm.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s.Spec
}

// openSW connects to the swtpm; swtpm serves one connection at a time, so
// a test shares one connection between attesters.
func openSW(t testing.TB, spec string) io.ReadWriteCloser {
	t.Helper()
	rwc, err := Open(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rwc.Close() })
	return rwc
}

func newSWAttester(t testing.TB, rwc io.ReadWriter) (*Attester, [32]byte) {
	t.Helper()
	m := sha256.Sum256([]byte("cloister runtime under test"))
	a, err := NewAttester(rwc, WithMeasurement(m))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a, m
}

func TestSWTPMRoundTrip(t *testing.T) {
	t.Parallel()
	rwc := openSW(t, startTPM(t))
	a, m := newSWAttester(t, rwc)
	var rd [attest.ReportDataSize]byte
	for i := range rd {
		rd[i] = byte(0x40 + i)
	}
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := attest.Detect(ev.Data); err != nil || c != attest.ClassTPM {
		t.Fatalf("detect: %v %v", c, err)
	}
	ak, err := a.AK()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifyTPM(ev.Data, attest.VerifyOptions{}); !errors.Is(err, attest.ErrUntrustedSigner) {
		t.Fatalf("unpinned: %v", err)
	}
	c, err := verifyTPM(ev.Data, attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{ak.Key}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.Measurement, m[:]) || !bytes.Equal(c.ReportData, rd[:]) {
		t.Fatalf("claims: measurement %x report data %x", c.Measurement, c.ReportData)
	}
	if c.Extra["qualifying_data"] != QualifyingRaw {
		t.Fatalf("swtpm implements SHA-512 and should take 64 bytes of qualifying data, mode %v", c.Extra["qualifying_data"])
	}
	if !bytes.Equal(c.Measurements["pcr23"], extendFromZero(m[:])) || c.HardwareProtected {
		t.Fatalf("claims %+v", c)
	}
	if err := attest.Validate(c, attest.ReferenceValues{ReportData: rd[:], Measurements: [][]byte{m[:]}}, c.IssuedAt); err != nil {
		t.Fatal(err)
	}

	// The same TPM derives the same AK: a second attester is trusted by the same pin.
	a.Close()
	a2, _ := newSWAttester(t, rwc)
	ak2, _ := a2.AK()
	if !ak2.Public.MatchesTemplate(ak.Public) || !bytes.Equal(ak2.PublicRaw, ak.PublicRaw) {
		t.Fatal("AK changed between attesters on the same TPM")
	}

	t.Run("tampered", func(t *testing.T) {
		opts := attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{ak.Key}}
		var b Bundle
		if err := json.Unmarshal(ev.Data, &b); err != nil {
			t.Fatal(err)
		}
		enc := func(f func(b *Bundle)) []byte {
			c := b
			c.PCRs = map[string]string{}
			for k, v := range b.PCRs {
				c.PCRs[k] = v
			}
			c.Quote = append([]byte(nil), b.Quote...)
			c.Signature = append([]byte(nil), b.Signature...)
			f(&c)
			out, _ := json.Marshal(c)
			return out
		}
		cases := []struct {
			name string
			data []byte
			want error
		}{
			{"report data", enc(func(b *Bundle) { b.ReportData = "00" + b.ReportData[2:] }), attest.ErrReportData},
			{"runtime measurement", enc(func(b *Bundle) { b.RuntimeMeasurement = "00" + b.RuntimeMeasurement[2:] }), attest.ErrMeasurement},
			{"PCR 0", enc(func(b *Bundle) { b.PCRs["0"] = "01" + b.PCRs["0"][2:] }), attest.ErrSignature},
			{"quote body", enc(func(b *Bundle) { b.Quote[len(b.Quote)-1] ^= 1 }), attest.ErrSignature},
			{"signature", enc(func(b *Bundle) { b.Signature[len(b.Signature)-1] ^= 1 }), attest.ErrSignature},
			{"sha256 mode claim", enc(func(b *Bundle) { b.QualifyingData = QualifyingSHA256 }), attest.ErrReportData},
			{"missing PCR", enc(func(b *Bundle) { delete(b.PCRs, "3") }), attest.ErrMalformed},
			{"unknown member", bytes.Replace(ev.Data, []byte(`"format"`), []byte(`"x":1,"format"`), 1), attest.ErrMalformed},
		}
		// An event log that does not describe these PCRs must not replay.
		var g goAttestationJSON
		gcp, _ := loadGCP(t)
		if err := json.Unmarshal(gcp, &g); err != nil {
			t.Fatal(err)
		}
		if _, err := verifyTPM(ev.Data, opts, g.Log.Raw); !errors.Is(err, attest.ErrMeasurement) {
			t.Errorf("foreign event log: %v, want ErrMeasurement", err)
		}
		for _, tc := range cases {
			_, err := verifyTPM(tc.data, opts)
			if !errors.Is(err, tc.want) {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			}
		}
	})

	t.Run("PCR 23 extended by someone else", func(t *testing.T) {
		if err := tpm2.PCRExtend(rwc, tpmutil.Handle(RuntimePCR), tpm2.AlgSHA256, make([]byte, 32), ""); err != nil {
			t.Fatal(err)
		}
		if _, err := a2.Attest(context.Background(), rd); err == nil {
			t.Fatal("attester quoted a PCR 23 that no longer holds its runtime measurement")
		}
	})
}

func TestOpenMissingDevice(t *testing.T) {
	t.Parallel()
	if _, err := Open("/nonexistent/tpmrm0"); err == nil {
		t.Fatal("opened a missing device")
	}
	if _, err := os.Stat("/dev/tpmrm0"); err == nil {
		t.Log("this machine has /dev/tpmrm0")
	}
}

func TestAKCertificateTrust(t *testing.T) {
	t.Parallel()
	rwc := openSW(t, startTPM(t))
	m := sha256.Sum256([]byte("runtime"))
	probe, err := NewAttester(rwc, WithMeasurement(m))
	if err != nil {
		t.Fatal(err)
	}
	ak, _ := probe.AK()
	probe.Close()

	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "AK enrolment CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	issueAt := func(pub crypto.PublicKey, notBefore, notAfter time.Time) []byte {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node-1 AK"}, NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	issue := func(pub crypto.PublicKey) []byte {
		return issueAt(pub, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	}
	tampered := issue(ak.Key)
	tampered[len(tampered)-5] ^= 1 // inside the CA's signature
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var rd [attest.ReportDataSize]byte
	for name, tc := range map[string]struct {
		cert  []byte
		roots []*x509.Certificate
		want  error
	}{
		"certified AK":         {issue(ak.Key), []*x509.Certificate{ca}, nil},
		"certificate, no root": {issue(ak.Key), nil, attest.ErrUntrustedSigner},
		"other key certified":  {issue(&other.PublicKey), []*x509.Certificate{ca}, attest.ErrChain},
		"tampered certificate": {tampered, []*x509.Certificate{ca}, attest.ErrChain},
		"expired certificate":  {issueAt(ak.Key, time.Now().Add(-time.Hour), time.Now().Add(-time.Minute)), []*x509.Certificate{ca}, attest.ErrExpired},
		"not yet valid":        {issueAt(ak.Key, time.Now().Add(time.Minute), time.Now().Add(time.Hour)), []*x509.Certificate{ca}, attest.ErrExpired},
	} {
		a, err := NewAttester(rwc, WithMeasurement(m), WithAKCertificate(tc.cert))
		if err != nil {
			t.Fatal(err)
		}
		ev, err := a.Attest(context.Background(), rd)
		a.Close()
		if err != nil {
			t.Fatal(err)
		}
		c, err := verifyTPM(ev.Data, attest.VerifyOptions{Roots: tc.roots})
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
		if tc.want == nil && err == nil && !strings.Contains(c.Signer, "node-1 AK") {
			t.Errorf("%s: signer %q", name, c.Signer)
		}
	}
}
