package dcap

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/attest"
)

func level(status string, pcesvn int, comps ...int) PlatformLevel {
	var l PlatformLevel
	for i := range 16 {
		svn := 0
		if i < len(comps) {
			svn = comps[i]
		}
		l.TCB.SGXComponents = append(l.TCB.SGXComponents, struct {
			SVN int `json:"svn"`
		}{svn})
	}
	l.TCB.PCESVN = pcesvn
	l.TCBStatus = status
	return l
}

// TestPlatformLevelIsPerComponent: a platform with one component below
// every level matches none, even where a lexicographic comparison of the
// component vectors would say it is above a lower level.
func TestPlatformLevelIsPerComponent(t *testing.T) {
	ti := &TCBInfo{FMSPC: "00a067110000", TCBLevels: []PlatformLevel{
		level("UpToDate", 13, 3, 3, 2, 2, 4, 1, 0, 5),
		level("OutOfDate", 13, 2, 2, 2, 2, 3, 1, 0, 5),
	}}
	ext := &PCKExtensions{PCESVN: 13}
	copy(ext.CompSVN[:], []uint8{3, 3, 2, 2, 4, 1, 0, 3})
	if _, err := platformLevel(ti, ext, &Quote{}); !errors.Is(err, attest.ErrTCB) {
		t.Fatalf("err = %v, want ErrTCB", err)
	}
	ext.CompSVN[7] = 5
	ext.CompSVN[4] = 3
	l, err := platformLevel(ti, ext, &Quote{})
	if err != nil || l.TCBStatus != "OutOfDate" {
		t.Fatalf("level %v err %v, want OutOfDate", l, err)
	}
	ext.PCESVN = 12
	if _, err := platformLevel(ti, ext, &Quote{}); !errors.Is(err, attest.ErrTCB) {
		t.Fatalf("low PCESVN: err = %v", err)
	}
}

func TestConverge(t *testing.T) {
	for _, tc := range [][3]string{
		{"UpToDate", "UpToDate", "UpToDate"},
		{"UpToDate", "OutOfDate", "OutOfDate"},
		{"SWHardeningNeeded", "OutOfDate", "OutOfDate"},
		{"ConfigurationNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"},
		{"ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"},
		{"ConfigurationAndSWHardeningNeeded", "UpToDate", "ConfigurationAndSWHardeningNeeded"},
		{"UpToDate", "Revoked", "Revoked"},
	} {
		if got := ConvergeTCBStatus(tc[0], tc[1]); got != tc[2] {
			t.Errorf("ConvergeTCBStatus(%s, %s) = %s, want %s", tc[0], tc[1], got, tc[2])
		}
	}
	if got := MergeAdvisories([]string{"a", "b"}, []string{"a", "c"}); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("MergeAdvisories = %v", got)
	}
}

func TestQEIdentityMismatch(t *testing.T) {
	col, err := ParseCollateralJSON(read(t, "attestation/dcap/sgx_quote_collateral.json"))
	if err != nil {
		t.Fatal(err)
	}
	q, err := ParseQuote(read(t, "attestation/dcap/sgx_quote"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := qeIdentityLevel(col.QEIdentity, q.QEReport)
	if err != nil || l.TCBStatus != "UpToDate" {
		t.Fatalf("genuine QE: %v %v", l, err)
	}
	other := *col.QEIdentity
	other.MRSIGNER = make([]byte, 32)
	if _, err := qeIdentityLevel(&other, q.QEReport); !errors.Is(err, attest.ErrChain) {
		t.Errorf("foreign MRSIGNER: %v", err)
	}
	other = *col.QEIdentity
	other.ISVProdID = 99
	if _, err := qeIdentityLevel(&other, q.QEReport); !errors.Is(err, attest.ErrChain) {
		t.Errorf("foreign ISVPRODID: %v", err)
	}
	other = *col.QEIdentity
	other.TCBLevels = other.TCBLevels[:1]
	other.TCBLevels[0].TCB.ISVSVN = 1000
	if _, err := qeIdentityLevel(&other, q.QEReport); !errors.Is(err, attest.ErrTCB) {
		t.Errorf("QE below every level: %v", err)
	}
}

// TestRevocation uses a throwaway CA: a CRL listing the leaf revokes it,
// a CRL from another CA says nothing about it, and CRL windows and
// signatures are enforced.
func TestRevocation(t *testing.T) {
	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, ca, ca, caKey.Public(), caKey)
	ca, _ = x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(77), Subject: pkix.Name{CommonName: "PCK"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}, ca, leafKey.Public(), caKey)
	leaf, _ := x509.ParseCertificate(leafDER)
	crlDER, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(2), ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(77), RevocationTime: now.Add(-time.Minute)}}}, ca, caKey)
	if err != nil {
		t.Fatal(err)
	}
	crl, _ := x509.ParseRevocationList(crlDER)
	if err := checkCRL("test CRL", crl, ca, now); err != nil {
		t.Fatal(err)
	}
	if err := notRevoked(crl, leaf); !errors.Is(err, attest.ErrRevoked) {
		t.Errorf("listed leaf: %v", err)
	}
	if err := notRevoked(crl, ca); err != nil {
		t.Errorf("CA is not on its own CRL: %v", err)
	}
	if err := checkCRL("test CRL", crl, ca, now.Add(2*time.Hour)); !errors.Is(err, attest.ErrExpired) {
		t.Errorf("stale CRL: %v", err)
	}
	if err := checkCRL("test CRL", crl, leaf, now); !errors.Is(err, attest.ErrChain) {
		t.Errorf("CRL checked against the wrong issuer: %v", err)
	}
}
