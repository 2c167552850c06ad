package tpm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/tpm/swtpm"
)

func readPEMCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ta, err := attest.ParseTrustAnchors(path, b)
	if err != nil || len(ta.Roots) != 1 {
		t.Fatalf("%s: %v", path, err)
	}
	return ta.Roots[0]
}

// TestEnrollmentByEKCertificate manufactures a swtpm with an EK
// certificate under a local CA, enrols its AK by credential activation,
// and verifies a quote through the resulting AK certificate.
func TestEnrollmentByEKCertificate(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian packages swtpm, swtpm-tools; scripts/test installs them)", tool)
		}
	}
	state, caDir := t.TempDir(), t.TempDir()
	if err := swtpm.Manufacture(context.Background(), state, caDir); err != nil {
		t.Fatal(err)
	}
	s, err := swtpm.Start(state)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	rwc := openSW(t, s.Spec)
	a, err := NewAttester(rwc, WithMeasurement(sha256.Sum256([]byte("runtime"))))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ekDER, err := a.EKCertificate()
	if err != nil {
		t.Fatal(err)
	}
	manufacturerRoot := readPEMCert(t, filepath.Join(caDir, "swtpm-localca-rootca-cert.pem"))
	issuing := readPEMCert(t, filepath.Join(caDir, "issuercert.pem"))
	now := time.Now()

	// The enrolment CA of the deployment.
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cloister AK enrolment CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)

	// An EK certificate from an untrusted manufacturer is refused.
	if _, err := NewEnrollmentChallenge(ekDER, []*x509.Certificate{ca}, nil, a.AKPublic(), now); !errors.Is(err, attest.ErrChain) {
		t.Fatalf("EK under an unknown root: %v", err)
	}
	ch, err := NewEnrollmentChallenge(ekDER, []*x509.Certificate{manufacturerRoot}, []*x509.Certificate{issuing}, a.AKPublic(), now)
	if err != nil {
		t.Fatal(err)
	}
	// A wrong answer gets no certificate.
	if _, err := ch.IssueAKCertificate(make([]byte, 32), ca, caKey, "node-1 AK", now, time.Hour); !errors.Is(err, attest.ErrUntrustedSigner) {
		t.Fatalf("wrong response: %v", err)
	}
	resp, err := a.ActivateCredential(ch.CredBlob, ch.EncSecret)
	if err != nil {
		t.Fatal(err)
	}
	akCert, err := ch.IssueAKCertificate(resp, ca, caKey, "node-1 AK", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	// A challenge bound to another AK cannot be activated by this TPM.
	otherAK := AKTemplateECC()
	fake, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherAK.ECCParameters.Point.XRaw = fake.PublicKey.X.FillBytes(make([]byte, 32))
	otherAK.ECCParameters.Point.YRaw = fake.PublicKey.Y.FillBytes(make([]byte, 32))
	otherPub, _ := otherAK.Encode()
	ch2, err := NewEnrollmentChallenge(ekDER, []*x509.Certificate{manufacturerRoot}, []*x509.Certificate{issuing}, otherPub, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ActivateCredential(ch2.CredBlob, ch2.EncSecret); err == nil {
		t.Fatal("the TPM activated a credential bound to an AK it does not hold")
	}

	// Evidence from an attester carrying the AK certificate verifies with
	// the enrolment CA as root, without pinning the AK.
	b, err := NewAttester(rwc, WithMeasurement(sha256.Sum256([]byte("runtime"))), WithAKCertificate(akCert))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var rd [attest.ReportDataSize]byte
	ev, err := b.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	c, err := verifyTPM(ev.Data, attest.VerifyOptions{Roots: []*x509.Certificate{ca}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Signer != "CN=node-1 AK" {
		t.Fatalf("signer %q", c.Signer)
	}
	if _, err := verifyTPM(ev.Data, attest.VerifyOptions{Roots: []*x509.Certificate{manufacturerRoot}}); !errors.Is(err, attest.ErrChain) {
		t.Fatalf("AK certificate against the wrong root: %v", err)
	}
}
