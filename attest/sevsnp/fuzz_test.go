package sevsnp

import (
	"bytes"
	"context"
	"testing"

	"github.com/cloisterhq/cloister/attest"
)

// FuzzVerify feeds arbitrary report bytes and one arbitrary collateral item
// (beside the real VCEK and AMD chain) through parsing and verification:
// it must never panic, and nothing but an unmodified signed report body
// may verify.
func FuzzVerify(f *testing.F) {
	s := loadSample(f)
	f.Add(s.report, []byte{})
	f.Add(s.report[:ReportSize-1], s.vcek)
	f.Add(append(append([]byte{}, s.report...), make([]byte, 64)...), s.askArk)
	signed := s.report[:0x2A0]
	f.Fuzz(func(t *testing.T, data, item []byte) {
		Sniff(data)
		_, _ = parseCollateral([][]byte{item})
		ev := &attest.Evidence{Class: attest.ClassSEVSNP, Data: data, Collateral: [][]byte{s.vcek, s.askArk, item}}
		c, err := (Verifier{}).Verify(context.Background(), ev, attest.VerifyOptions{Now: at2024, AllowDebug: true})
		if err == nil && (len(data) < 0x2A0 || !bytes.Equal(data[:0x2A0], signed) || c == nil) {
			t.Fatalf("verified a modified report")
		}
	})
}
