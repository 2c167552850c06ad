package dcap

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/internal/corpus"
)

func conformance(t testing.TB, rel string) string {
	return corpus.Path(t, rel)
}

func read(t testing.TB, rel string) []byte {
	return corpus.Read(t, rel)
}

var (
	inWindow2025 = time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)
	inWindow2026 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
)

func evidence(t testing.TB, quote, collateral string) *attest.Evidence {
	ev := &attest.Evidence{Data: read(t, "attestation/dcap/"+quote)}
	if collateral != "" {
		ev.Collateral = [][]byte{read(t, "attestation/dcap/"+collateral)}
	}
	return ev
}

func TestSGXQuoteWithCollateral(t *testing.T) {
	ev := evidence(t, "sgx_quote", "sgx_quote_collateral.json")
	ev.Class = attest.ClassSGX
	c, err := VerifyEvidence(ev, attest.VerifyOptions{Now: inWindow2025}, false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Class != attest.ClassSGX || c.Format != "sgx-quote-v3" || c.Debug || !c.HardwareProtected {
		t.Errorf("class %s format %s debug %v hw %v", c.Class, c.Format, c.Debug, c.HardwareProtected)
	}
	if c.TCBStatus != "ConfigurationAndSWHardeningNeeded" {
		t.Errorf("TCB status %q", c.TCBStatus)
	}
	if !slices.Equal(c.Advisories, []string{"INTEL-SA-00289", "INTEL-SA-00615"}) {
		t.Errorf("advisories %v", c.Advisories)
	}
	q, _ := ParseQuote(ev.Data)
	if !bytes.Equal(c.Measurement, q.SGX.MRENCLAVE[:]) || !bytes.Equal(c.Measurements["mrsigner"], q.SGX.MRSIGNER[:]) || !bytes.Equal(c.ReportData, q.SGX.ReportData[:]) {
		t.Error("claims do not carry the report's MRENCLAVE, MRSIGNER and report data")
	}
	if bytes.Equal(c.Measurement, make([]byte, 32)) {
		t.Error("MRENCLAVE is zero")
	}
	if c.Extra["fmspc"] != "00a067110000" || c.Extra["qe_tcb_status"] != "UpToDate" || c.SVN["pce_svn"] != 13 {
		t.Errorf("fmspc %v qe %v pce_svn %d", c.Extra["fmspc"], c.Extra["qe_tcb_status"], c.SVN["pce_svn"])
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings %v", c.Warnings)
	}
}

func TestTDXQuoteWithCollateral(t *testing.T) {
	ev := evidence(t, "tdx_quote", "tdx_quote_collateral.json")
	c, err := VerifyEvidence(ev, attest.VerifyOptions{Now: inWindow2025}, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Class != attest.ClassTDX || c.Format != "tdx-quote-v4" || c.Debug {
		t.Errorf("class %s format %s debug %v", c.Class, c.Format, c.Debug)
	}
	if c.TCBStatus != "UpToDate" || len(c.Advisories) != 0 {
		t.Errorf("TCB status %q advisories %v", c.TCBStatus, c.Advisories)
	}
	q, _ := ParseQuote(ev.Data)
	if !bytes.Equal(c.Measurement, q.TD.MRTD[:]) || !bytes.Equal(c.Measurements["rtmr3"], q.TD.RTMR[3][:]) {
		t.Error("claims do not carry MRTD / RTMR3")
	}
	if c.Extra["tdx_module_tcb_status"] != "UpToDate" || c.SVN["tee_tcb_svn1"] != 1 {
		t.Errorf("module status %v tee_tcb_svn1 %d", c.Extra["tdx_module_tcb_status"], c.SVN["tee_tcb_svn1"])
	}
	// The same quote is not an SGX quote.
	if _, err := VerifyEvidence(ev, attest.VerifyOptions{Now: inWindow2025}, false); !errors.Is(err, attest.ErrMalformed) {
		t.Errorf("as SGX: %v", err)
	}
}

// TestTDXOutdatedQuote: the platform's SGX TCB component 8 (SEAMLDR ACM,
// SVN 3) is below every level of its TCB info (5), so no level matches.
// Intel's comparison is per component; dcap-qvl, which compares the
// component vectors lexicographically, would report OutOfDate instead.
func TestTDXOutdatedQuote(t *testing.T) {
	ev := evidence(t, "tdx_quote_outdated", "tdx_quote_outdated_collateral.json")
	_, err := VerifyEvidence(ev, attest.VerifyOptions{Now: inWindow2026}, true)
	if !errors.Is(err, attest.ErrTCB) || !strings.Contains(err.Error(), "no matching TCB level found") {
		t.Fatalf("err = %v, want ErrTCB no matching TCB level", err)
	}
	// Without collateral its signatures and PCK chain are fine (v5 quote).
	ev.Collateral = nil
	c, err := VerifyEvidence(ev, attest.VerifyOptions{Now: inWindow2026}, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Format != "tdx-quote-v5" || c.TCBStatus != "" || len(c.Warnings) != 1 {
		t.Errorf("format %s status %q warnings %v", c.Format, c.TCBStatus, c.Warnings)
	}
}

func TestTrailingBytesIgnoredWithWarning(t *testing.T) {
	ev := evidence(t, "sgx_quote", "sgx_quote_collateral.json")
	ev.Data = append(ev.Data, "unsigned note"...)
	c, err := VerifyEvidence(ev, attest.VerifyOptions{Now: inWindow2025}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "13 bytes after the quote") {
		t.Errorf("warnings %v", c.Warnings)
	}
}

func TestWithoutCollateral(t *testing.T) {
	ev := evidence(t, "sgx_quote", "")
	c, err := VerifyEvidence(ev, attest.VerifyOptions{Now: inWindow2025}, false)
	if err != nil {
		t.Fatal(err)
	}
	if c.TCBStatus != "" || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "no DCAP collateral") {
		t.Errorf("status %q warnings %v", c.TCBStatus, c.Warnings)
	}
}

// replaceCollateral edits one member of the collateral JSON.
func replaceCollateral(t *testing.T, raw []byte, key string, edit func(string) string) []byte {
	t.Helper()
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	before := m[key]
	m[key] = edit(before)
	if m[key] == before {
		t.Fatalf("edit of %s changed nothing", key)
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func flipHex(s string, i int) string {
	b, _ := hex.DecodeString(s)
	b[i] ^= 1
	return hex.EncodeToString(b)
}

func TestTamperedAndOutOfWindow(t *testing.T) {
	quote := read(t, "attestation/dcap/sgx_quote")
	col := read(t, "attestation/dcap/sgx_quote_collateral.json")
	tdxCol := read(t, "attestation/dcap/tdx_quote_collateral.json")
	q, err := ParseQuote(quote)
	if err != nil {
		t.Fatal(err)
	}
	sigOff := len(q.SignedData) + 4
	flip := func(i int) []byte { b := bytes.Clone(quote); b[i] ^= 1; return b }
	opts := attest.VerifyOptions{Now: inWindow2025}
	cases := []struct {
		name  string
		quote []byte
		col   []byte
		opts  attest.VerifyOptions
		want  error
		msg   string
	}{
		{"report data", flip(HeaderSize + 320), col, opts, attest.ErrSignature, "quote signature"},
		{"mrenclave", flip(HeaderSize + 64), col, opts, attest.ErrSignature, "quote signature"},
		{"header user data", flip(40), col, opts, attest.ErrSignature, "quote signature"},
		{"quote signature", flip(sigOff + 5), col, opts, attest.ErrSignature, "quote signature"},
		{"attestation key", flip(sigOff + 64 + 5), col, opts, attest.ErrSignature, ""},
		{"QE report", flip(sigOff + 128 + 64), col, opts, attest.ErrSignature, "QE report signature"},
		{"QE report signature", flip(sigOff + 128 + 384 + 3), col, opts, attest.ErrSignature, "QE report signature"},
		{"PCK certificate", corpus.TamperPCK(t, quote), col, opts, attest.ErrChain, "PCK certificate chain"},
		{"TCB info body", quote, replaceCollateral(t, col, "tcb_info", func(s string) string {
			return strings.Replace(s, `"tcbStatus":"ConfigurationAndSWHardeningNeeded"`, `"tcbStatus":"UpToDate"`, 1)
		}), opts, attest.ErrSignature, "TCB info signature"},
		{"TCB info signature", quote, replaceCollateral(t, col, "tcb_info_signature", func(s string) string { return flipHex(s, 10) }), opts, attest.ErrSignature, "TCB info signature"},
		{"QE identity signature", quote, replaceCollateral(t, col, "qe_identity_signature", func(s string) string { return flipHex(s, 40) }), opts, attest.ErrSignature, "QE identity signature"},
		{"PCK CRL signature", quote, replaceCollateral(t, col, "pck_crl", func(s string) string { b, _ := hex.DecodeString(s); return flipHex(s, len(b)-4) }), opts, attest.ErrChain, "PCK CRL"},
		{"TDX collateral for SGX quote", quote, tdxCol, opts, attest.ErrChain, ""},
		{"before collateral window", quote, col, attest.VerifyOptions{Now: time.Date(2025, 6, 18, 0, 0, 0, 0, time.UTC)}, attest.ErrExpired, ""},
		{"after collateral window", quote, col, attest.VerifyOptions{Now: time.Date(2025, 7, 20, 0, 0, 0, 0, time.UTC)}, attest.ErrExpired, ""},
		{"far future", quote, nil, attest.VerifyOptions{Now: time.Date(2053, 1, 1, 0, 0, 0, 0, time.UTC)}, attest.ErrExpired, ""},
		{"no roots", quote, col, attest.VerifyOptions{Now: inWindow2025, ReplaceRoots: true}, attest.ErrChain, ""},
		{"truncated", quote[:1000], col, opts, attest.ErrMalformed, ""},
		{"unknown collateral", quote, []byte("-----BEGIN CERTIFICATE-----"), opts, attest.ErrMalformed, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := &attest.Evidence{Class: attest.ClassSGX, Data: tc.quote}
			if tc.col != nil {
				ev.Collateral = [][]byte{tc.col}
			}
			c, err := VerifyEvidence(ev, tc.opts, false)
			if !errors.Is(err, tc.want) || c != nil {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			t.Log(err)
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.msg)
			}
		})
	}
}

func TestTDXTampered(t *testing.T) {
	quote := read(t, "attestation/dcap/tdx_quote")
	col := read(t, "attestation/dcap/tdx_quote_collateral.json")
	opts := attest.VerifyOptions{Now: inWindow2025}
	for name, off := range map[string]int{"mrtd": HeaderSize + 136, "rtmr0": HeaderSize + 328, "report data": HeaderSize + 520, "td attributes (debug)": HeaderSize + 120} {
		b := bytes.Clone(quote)
		b[off] ^= 1
		_, err := VerifyEvidence(&attest.Evidence{Data: b, Collateral: [][]byte{col}}, opts, true)
		if !errors.Is(err, attest.ErrSignature) {
			t.Errorf("%s: err = %v, want ErrSignature", name, err)
		}
	}
	tampered := replaceCollateral(t, col, "tcb_info", func(s string) string { return strings.Replace(s, `"isvsvn":3`, `"isvsvn":2`, 1) })
	if _, err := VerifyEvidence(&attest.Evidence{Data: quote, Collateral: [][]byte{tampered}}, opts, true); !errors.Is(err, attest.ErrSignature) {
		t.Errorf("tampered TDX module identity: %v", err)
	}
}

func TestParseQuoteRejects(t *testing.T) {
	quote := read(t, "attestation/dcap/tdx_quote")
	for name, b := range map[string][]byte{
		"empty":       nil,
		"header only": quote[:HeaderSize],
		"version 2":   append([]byte{2, 0}, quote[2:]...),
		"p384 key":    append([]byte{4, 0, 3, 0}, quote[4:]...),
		"bad tee":     append([]byte{4, 0, 2, 0, 0x82}, quote[5:]...),
	} {
		if _, err := ParseQuote(b); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if !Sniff(quote) || Sniff(quote[:20]) || Sniff(make([]byte, 100)) {
		t.Error("Sniff")
	}
}

// TestTDXQuotesTamperedAndOutOfWindow gives the two TDX samples the same
// treatment as the SGX one: a flipped byte in the signed body, in the
// quote signature and in the PCK certificate, and times outside the
// collateral or certificate windows, each failing for its own reason.
// tdx_quote verifies with its collateral; tdx_quote_outdated (v5) verifies
// without collateral (with it, no TCB level matches: TestTDXOutdatedQuote).
func TestTDXQuotesTamperedAndOutOfWindow(t *testing.T) {
	for _, tc := range []struct {
		quote, collateral string
		in, before, after time.Time
	}{
		{"tdx_quote", "tdx_quote_collateral.json", inWindow2025, time.Date(2025, 6, 18, 0, 0, 0, 0, time.UTC), time.Date(2025, 7, 20, 0, 0, 0, 0, time.UTC)},
		{"tdx_quote_outdated", "", inWindow2026, time.Time{}, time.Date(2053, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"tdx_quote_outdated", "tdx_quote_outdated_collateral.json", inWindow2026, time.Date(2026, 2, 17, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 21, 0, 0, 0, 0, time.UTC)},
	} {
		t.Run(tc.quote+"+"+tc.collateral, func(t *testing.T) {
			quote := read(t, "attestation/dcap/"+tc.quote)
			var col [][]byte
			if tc.collateral != "" {
				col = [][]byte{read(t, "attestation/dcap/"+tc.collateral)}
			}
			q, err := ParseQuote(quote)
			if err != nil {
				t.Fatal(err)
			}
			sigOff := len(q.SignedData) + 4
			bodyOff := HeaderSize
			if q.Version == 5 {
				bodyOff += 6 // body descriptor: type, size
			}
			flip := func(i int) []byte { b := bytes.Clone(quote); b[i] ^= 1; return b }
			verify := func(b []byte, at time.Time) error {
				_, err := VerifyEvidence(&attest.Evidence{Class: attest.ClassTDX, Data: b, Collateral: col}, attest.VerifyOptions{Now: at}, true)
				return err
			}
			if tc.collateral == "" || tc.quote == "tdx_quote" {
				if err := verify(quote, tc.in); err != nil {
					t.Fatalf("untampered: %v", err)
				}
			}
			cases := []struct {
				name string
				b    []byte
				at   time.Time
				want error
				msg  string
			}{
				{"MRTD", flip(bodyOff + 136), tc.in, attest.ErrSignature, "quote signature"},
				{"last body byte", flip(len(q.SignedData) - 1), tc.in, attest.ErrSignature, "quote signature"},
				{"quote signature", flip(sigOff + 7), tc.in, attest.ErrSignature, "quote signature"},
				{"QE report", flip(sigOff + 128 + 6 + 64), tc.in, attest.ErrSignature, "QE report signature"},
				{"PCK certificate", corpus.TamperPCK(t, quote), tc.in, attest.ErrChain, "PCK certificate chain"},
				{"after the window", quote, tc.after, attest.ErrExpired, ""},
			}
			if !tc.before.IsZero() {
				cases = append(cases, struct {
					name string
					b    []byte
					at   time.Time
					want error
					msg  string
				}{"before the window", quote, tc.before, attest.ErrExpired, ""})
			}
			for _, c := range cases {
				err := verify(c.b, c.at)
				if !errors.Is(err, c.want) || (c.msg != "" && !strings.Contains(err.Error(), c.msg)) {
					t.Errorf("%s: err = %v, want %v mentioning %q", c.name, err, c.want, c.msg)
				}
			}
		})
	}
}
