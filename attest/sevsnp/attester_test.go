package sevsnp

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	test "github.com/google/go-sev-guest/testing"

	"github.com/cloisterhq/cloister/attest"
)

// TestAttesterWithFakeSecureProcessor runs the attester against
// go-sev-guest's fake AMD-SP, which signs reports with a test-only
// ARK→ASK→VCEK chain, and verifies the result with that ARK pinned.
func TestAttesterWithFakeSecureProcessor(t *testing.T) {
	// Not parallel: go-sev-guest's test device shares one math/rand source.
	var rd [64]byte
	copy(rd[:], "cloister sev-snp attester test")
	now := time.Now()
	report := test.CreateRawReport(&test.TestReportOptions{ReportData: rd[:]})
	qp, err := test.TcQuoteProvider([]test.TestCase{{Name: "rd", Input: rd, Output: report}}, &test.DeviceOptions{Now: now, Product: abi.DefaultSevProduct()})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := (&Attester{Provider: qp}).Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Class != attest.ClassSEVSNP || len(ev.Data) != ReportSize || len(ev.Collateral) < 3 {
		t.Fatalf("evidence: class %s, %d bytes, %d collateral items", ev.Class, len(ev.Data), len(ev.Collateral))
	}
	opts := attest.VerifyOptions{Now: now, ReplaceRoots: true, Roots: []*x509.Certificate{qp.Device.Signer.Ark}, AllowDebug: true}
	c, err := attest.Verify(context.Background(), ev, opts)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !bytes.Equal(c.ReportData, rd[:]) || !c.Debug {
		t.Errorf("report data %x debug %v", c.ReportData, c.Debug)
	}
	// The fake report's policy allows debugging: refused by default.
	opts.AllowDebug = false
	if _, err := attest.Verify(context.Background(), ev, opts); !errors.Is(err, attest.ErrDebug) {
		t.Errorf("err = %v, want ErrDebug", err)
	}
	t.Run("CRL", func(t *testing.T) { testCRLs(t, ev, qp.Device.Signer, now) })
	// The built-in AMD roots do not vouch for the fake chain.
	if _, err := attest.Verify(context.Background(), ev, attest.VerifyOptions{Now: now, AllowDebug: true}); !errors.Is(err, attest.ErrChain) {
		t.Errorf("err = %v, want ErrChain", err)
	}
}

// testCRLs checks AMD CRL handling with CRLs signed by the fake ARK: one
// listing the ASK revokes it (an AMD CRL is signed by the ARK and lists
// intermediate keys), a stale one is out of its window, one
// signed by another key is refused, and a clean current one passes.
func testCRLs(t *testing.T, ev *attest.Evidence, signer *test.AmdSigner, now time.Time) {
	ark := signer.Ark
	mk := func(key crypto.Signer, revoked []x509.RevocationListEntry, this, next time.Time) []byte {
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number: big.NewInt(1), ThisUpdate: this, NextUpdate: next, RevokedCertificateEntries: revoked,
			SignatureAlgorithm: x509.SHA384WithRSAPSS,
		}, ark, key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		crl  []byte
		want error
	}{
		{"clean", mk(signer.Keys.Ark, nil, now.Add(-time.Hour), now.Add(time.Hour)), nil},
		{"ask revoked", mk(signer.Keys.Ark, []x509.RevocationListEntry{{SerialNumber: signer.Ask.SerialNumber, RevocationTime: now.Add(-time.Minute)}}, now.Add(-time.Hour), now.Add(time.Hour)), attest.ErrRevoked},
		{"stale", mk(signer.Keys.Ark, nil, now.Add(-48*time.Hour), now.Add(-24*time.Hour)), attest.ErrExpired},
		{"wrong signer", mk(other, nil, now.Add(-time.Hour), now.Add(time.Hour)), attest.ErrChain},
	}
	for _, tc := range cases {
		e := &attest.Evidence{Class: ev.Class, Data: ev.Data, Collateral: append(append([][]byte{}, ev.Collateral...), tc.crl)}
		c, err := attest.Verify(context.Background(), e, attest.VerifyOptions{Now: now, ReplaceRoots: true, Roots: []*x509.Certificate{ark}, AllowDebug: true})
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
		if tc.want == nil && c != nil && len(c.Warnings) > 0 && strings.Contains(strings.Join(c.Warnings, ";"), "CRL") {
			t.Errorf("%s: warnings still mention the CRL: %v", tc.name, c.Warnings)
		}
	}
}
