package attest

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestValidate checks each rule of Validate on its own, against claims
// that pass every rule, so a failure can only come from the rule under
// test; and that the error names what was wrong.
func TestValidate(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	rd := make([]byte, ReportDataSize)
	copy(rd, []byte{1, 2, 3})
	good := func() *Claims {
		return &Claims{
			Class: ClassSEVSNP, Measurement: []byte{0xaa, 0xbb}, ReportData: append([]byte(nil), rd...),
			Nonce: []byte("n1"), HardwareProtected: true, TCBStatus: "UpToDate",
			SVN: map[string]uint64{"snp": 5}, IssuedAt: now.Add(-time.Minute),
		}
	}
	if err := Validate(good(), ReferenceValues{
		Measurements: [][]byte{{0x01}, {0xaa, 0xbb}}, MinSVN: map[string]uint64{"snp": 5}, AcceptTCBStatus: []string{"UpToDate"},
		ReportData: []byte{1, 2, 3}, Nonce: []byte("n1"), MaxAge: time.Hour, RequireHardware: true,
	}, now); err != nil {
		t.Fatalf("claims meeting every reference value: %v", err)
	}
	if err := Validate(good(), ReferenceValues{}, now); err != nil {
		t.Fatalf("zero reference values: %v", err)
	}

	cases := []struct {
		name   string
		claims func(c *Claims)
		ref    ReferenceValues
		want   error
		msg    string
	}{
		{"debug refused by default", func(c *Claims) { c.Debug = true }, ReferenceValues{}, ErrDebug, "debug-enabled"},
		{"no hardware protection", func(c *Claims) { c.HardwareProtected = false }, ReferenceValues{RequireHardware: true}, ErrTCB, "no hardware protection"},
		{"measurement not listed", nil, ReferenceValues{Measurements: [][]byte{{0xaa}}}, ErrMeasurement, "aabb"},
		{"report data differs", nil, ReferenceValues{ReportData: []byte{1, 2, 4}}, ErrReportData, "expected 010204"},
		{"report data prefix, rest not zero", func(c *Claims) { c.ReportData[63] = 1 }, ReferenceValues{ReportData: []byte{1, 2, 3}}, ErrReportData, ""},
		{"report data longer than the evidence's", func(c *Claims) { c.ReportData = c.ReportData[:2] }, ReferenceValues{ReportData: []byte{1, 2, 3}}, ErrReportData, ""},
		{"nonce differs (replay)", nil, ReferenceValues{Nonce: []byte("n2")}, ErrNonce, "6e32"},
		{"no nonce in the evidence", func(c *Claims) { c.Nonce = nil }, ReferenceValues{Nonce: []byte("n1")}, ErrNonce, ""},
		{"TCB status not accepted", func(c *Claims) { c.TCBStatus = "OutOfDate" }, ReferenceValues{AcceptTCBStatus: []string{"UpToDate"}}, ErrTCB, `"OutOfDate"`},
		{"revoked refused by default", func(c *Claims) { c.TCBStatus = "Revoked" }, ReferenceValues{}, ErrTCB, "revoked"},
		{"SVN below minimum", nil, ReferenceValues{MinSVN: map[string]uint64{"snp": 6}}, ErrTCB, "snp is 5, minimum 6"},
		{"SVN component missing", nil, ReferenceValues{MinSVN: map[string]uint64{"tee": 0}}, ErrTCB, `"tee"`},
		{"too old", func(c *Claims) { c.IssuedAt = now.Add(-2 * time.Hour) }, ReferenceValues{MaxAge: time.Hour}, ErrStale, "2h0m0s ago"},
		{"no timestamp with a maximum age", func(c *Claims) { c.IssuedAt = time.Time{} }, ReferenceValues{MaxAge: time.Hour}, ErrStale, "no timestamp"},
	}
	for _, tc := range cases {
		c := good()
		if tc.claims != nil {
			tc.claims(c)
		}
		err := Validate(c, tc.ref, now)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %v mentioning %q", tc.name, err, tc.want, tc.msg)
		}
	}
	// Debug allowed by the reference values.
	c := good()
	c.Debug = true
	if err := Validate(c, ReferenceValues{AllowDebug: true}, now); err != nil {
		t.Errorf("debug allowed: %v", err)
	}
	if err := Validate(nil, ReferenceValues{}, now); !errors.Is(err, ErrMalformed) {
		t.Errorf("nil claims: %v", err)
	}
	// Long report data is shortened in messages, not dumped whole.
	c = good()
	c.ReportData = make([]byte, 4096)
	if err := Validate(c, ReferenceValues{ReportData: []byte{9}}, now); !errors.Is(err, ErrReportData) || len(err.Error()) > 400 {
		t.Errorf("long report data: %d-byte message", len(err.Error()))
	}
}
