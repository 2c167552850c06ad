package sevsnp

import (
	"context"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/attest"
)

// FuzzVerify feeds arbitrary report bytes (and one arbitrary collateral
// item) through parsing and verification: it must never panic and never
// accept anything but the real report.
func FuzzVerify(f *testing.F) {
	s := loadSample(f)
	f.Add(s.report, []byte{})
	f.Add(s.report[:ReportSize-1], s.vcek)
	f.Add(append(append([]byte{}, s.report...), make([]byte, 64)...), s.askArk)
	f.Fuzz(func(t *testing.T, data, extra []byte) {
		ev := &attest.Evidence{Class: attest.ClassSEVSNP, Data: data, Collateral: [][]byte{s.vcek, s.askArk}}
		if len(extra) > 0 {
			ev.Collateral = append(ev.Collateral, extra)
		}
		Sniff(data)
		c, err := Verifier{}.Verify(context.Background(), ev, attest.VerifyOptions{Now: time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC), AllowDebug: true})
		if err == nil && string(c.Measurement) != string(s.report[0x90:0xC0]) {
			t.Fatalf("accepted a report that is not the sample")
		}
	})
}
