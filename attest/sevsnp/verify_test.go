package sevsnp

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/internal/corpus"
)

// conformance returns the path of a file in the shared conformance corpus,
// which lives beside the module root.
func conformance(t testing.TB, rel string) string {
	return corpus.Path(t, rel)
}

func read(t testing.TB, rel string) []byte {
	return corpus.Read(t, rel)
}

type sample struct{ report, vcek, askArk []byte }

func loadSample(t testing.TB) sample {
	return sample{
		report: read(t, "attestation/sev-snp/attestation.bin"),
		vcek:   read(t, "attestation/sev-snp/vcek.testcer"),
		askArk: read(t, "attestation/sev-snp/ask_ark_milan.pem"),
	}
}

func (s sample) evidence() *attest.Evidence {
	return &attest.Evidence{Class: attest.ClassSEVSNP, Data: bytes.Clone(s.report), Collateral: [][]byte{bytes.Clone(s.vcek), bytes.Clone(s.askArk)}}
}

var at2024 = time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)

func TestConformanceMilanReport(t *testing.T) {
	t.Parallel()
	s := loadSample(t)
	c, err := attest.Verify(context.Background(), s.evidence(), attest.VerifyOptions{Now: at2024, AllowDebug: true})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if c.Class != attest.ClassSEVSNP || c.Format != "sev-snp-report-v2" || !c.HardwareProtected || !c.Debug {
		t.Errorf("class/format/hw/debug = %s %s %v %v", c.Class, c.Format, c.HardwareProtected, c.Debug)
	}
	wantRD := make([]byte, 64)
	copy(wantRD, []byte{1, 2, 3, 4, 5})
	if !bytes.Equal(c.ReportData, wantRD) {
		t.Errorf("report data = %x", c.ReportData)
	}
	m := hex.EncodeToString(c.Measurement)
	if len(c.Measurement) != 48 || !strings.HasPrefix(m, "b07af962") || !strings.HasSuffix(m, "2b01") {
		t.Errorf("measurement = %s", m)
	}
	if !strings.HasPrefix(hex.EncodeToString(c.Measurements["chip_id"]), "3ac3fe21") {
		t.Errorf("chip_id = %x", c.Measurements["chip_id"])
	}
	for name, size := range map[string]int{"host_data": 32, "family_id": 16, "image_id": 16} {
		v := c.Measurements[name]
		if len(v) != size || !bytes.Equal(v, make([]byte, size)) {
			t.Errorf("%s = %x, want %d zero bytes", name, v, size)
		}
	}
	if c.Extra["policy"] != "0xb0000" {
		t.Errorf("policy = %v", c.Extra["policy"])
	}
	if c.TCBStatus != "" || len(c.Advisories) != 0 {
		t.Errorf("tcb status %q advisories %v", c.TCBStatus, c.Advisories)
	}
	// REPORTED_TCB 0x4405000000000002: bootloader 2, TEE 0, SNP 5, microcode 0x44.
	if want := map[string]uint64{"bootloader": 2, "tee": 0, "snp": 5, "microcode": 0x44, "guest_svn": 0}; !maps.Equal(c.SVN, want) {
		t.Errorf("svn = %v, want %v", c.SVN, want)
	}
	if err := attest.Validate(c, attest.ReferenceValues{AllowDebug: true, ReportData: []byte{1, 2, 3, 4, 5}, Measurements: [][]byte{c.Measurement}}, at2024); err != nil {
		t.Errorf("validate: %v", err)
	}
}

func TestDebugPolicyRefused(t *testing.T) {
	t.Parallel()
	s := loadSample(t)
	_, err := attest.Verify(context.Background(), s.evidence(), attest.VerifyOptions{Now: at2024})
	if !errors.Is(err, attest.ErrDebug) {
		t.Fatalf("err = %v, want ErrDebug", err)
	}
}

func TestTamperedAndOutOfWindow(t *testing.T) {
	t.Parallel()
	s := loadSample(t)
	opts := attest.VerifyOptions{Now: at2024, AllowDebug: true}
	flip := func(b []byte, i int) []byte { b = bytes.Clone(b); b[i] ^= 0x01; return b }
	cases := []struct {
		name string
		ev   func() *attest.Evidence
		opts attest.VerifyOptions
		want error
	}{
		{"body: report data", func() *attest.Evidence { e := s.evidence(); e.Data = flip(s.report, 0x50); return e }, opts, attest.ErrSignature},
		{"body: measurement", func() *attest.Evidence { e := s.evidence(); e.Data = flip(s.report, 0x90); return e }, opts, attest.ErrSignature},
		{"signature r", func() *attest.Evidence { e := s.evidence(); e.Data = flip(s.report, 0x2A0); return e }, opts, attest.ErrSignature},
		{"vcek signature", func() *attest.Evidence {
			e := s.evidence()
			e.Collateral[0] = flip(s.vcek, len(s.vcek)-10)
			return e
		}, opts, attest.ErrChain},
		{"no vcek", func() *attest.Evidence { e := s.evidence(); e.Collateral = e.Collateral[1:]; return e }, opts, attest.ErrChain},
		{"after vcek expiry", s.evidence, attest.VerifyOptions{Now: time.Date(2029, 9, 25, 0, 0, 0, 0, time.UTC), AllowDebug: true}, attest.ErrExpired},
		{"before vcek issue", s.evidence, attest.VerifyOptions{Now: time.Date(2022, 9, 1, 0, 0, 0, 0, time.UTC), AllowDebug: true}, attest.ErrExpired},
		{"no roots", s.evidence, attest.VerifyOptions{Now: at2024, AllowDebug: true, ReplaceRoots: true}, attest.ErrChain},
		{"truncated", func() *attest.Evidence { e := s.evidence(); e.Data = s.report[:1000]; return e }, opts, attest.ErrMalformed},
		{"trailing garbage", func() *attest.Evidence { e := s.evidence(); e.Data = append(bytes.Clone(s.report), 1, 2, 3); return e }, opts, attest.ErrMalformed},
		{"garbage collateral", func() *attest.Evidence {
			e := s.evidence()
			e.Collateral = append(e.Collateral, []byte("junk"))
			return e
		}, opts, attest.ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := attest.Verify(context.Background(), tc.ev(), tc.opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if c != nil {
				t.Fatal("claims returned with an error")
			}
		})
	}
}

func TestGenoaRootDoesNotVouchForMilanVCEK(t *testing.T) {
	t.Parallel()
	s := loadSample(t)
	ev := s.evidence()
	ev.Collateral[1] = read(t, "attestation/sev-snp/ask_ark_genoa.pem")
	// Only the Genoa ARK is trusted: the Milan VCEK must not chain.
	genoa, _, _ := trustedRoots(&collateral{}, attest.VerifyOptions{})
	var roots = genoa["Genoa"][0].ProductCerts.Ark
	_, err := attest.Verify(context.Background(), ev, attest.VerifyOptions{Now: at2024, AllowDebug: true, ReplaceRoots: true, Roots: []*x509.Certificate{roots}})
	if !errors.Is(err, attest.ErrChain) {
		t.Fatalf("err = %v, want ErrChain", err)
	}
}

func TestSniff(t *testing.T) {
	t.Parallel()
	s := loadSample(t)
	if !Sniff(s.report) {
		t.Error("Sniff(real report) = false")
	}
	if Sniff(s.vcek) || Sniff(s.report[:100]) || Sniff(make([]byte, ReportSize)) {
		t.Error("Sniff accepted a non-report")
	}
}

func BenchmarkVerifyMilan(b *testing.B) {
	s := loadSample(b)
	ev := s.evidence()
	opts := attest.VerifyOptions{Now: at2024, AllowDebug: true}
	for b.Loop() {
		if _, err := (Verifier{}).Verify(context.Background(), ev, opts); err != nil {
			b.Fatal(err)
		}
	}
}

func TestTurinTCBLayout(t *testing.T) {
	t.Parallel()
	// Turin: FMC, bootloader, TEE, SNP in bytes 0-3, microcode in byte 7.
	r := &spb.Report{ReportedTcb: 0x4800000004030201, Cpuid1EaxFms: abi.FmsToCpuid1Eax(0x1a, 0x02, 0x01), GuestSvn: 3}
	want := map[string]uint64{"fmc": 1, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 0x48, "guest_svn": 3}
	if got := svnOf(r); !maps.Equal(got, want) {
		t.Errorf("svnOf(Turin) = %v, want %v", got, want)
	}
}
