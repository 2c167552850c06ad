package cli

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/attest/tpm"
	"github.com/cloisterhq/cloister/internal/corpus"
)

// conformanceDir is testdata/conformance/attestation under the
// module root.
func conformanceDir(t *testing.T) string {
	return corpus.Path(t, "attestation")
}

type cliCase struct {
	args  []string          // after the file
	code  int               // exit status
	want  map[string]string // --json members that must match (see matchJSON)
	inErr string            // substring of the error output when code != 0
	warn  string            // substring of one of the warnings when code == 0
}

// jsonString renders a decoded --json member for comparison: strings as
// they are, booleans and numbers in Go syntax, arrays joined by commas,
// absent members as "".
func jsonString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = jsonString(e)
		}
		return strings.Join(parts, ",")
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// matchJSON checks member path (dots descend into objects, e.g.
// "measurements.chip_id", "svn.snp") of got against want: equal, or with
// one '*' in want, the given prefix and suffix.
func matchJSON(got map[string]any, path, want string) (string, bool) {
	var v any = got
	for _, k := range strings.Split(path, ".") {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	s := jsonString(v)
	if p, suf, ok := strings.Cut(want, "*"); ok {
		return s, strings.HasPrefix(s, p) && strings.HasSuffix(s, suf) && len(s) >= len(p)+len(suf)
	}
	return s, s == want
}

// runCases runs "cloister attest verify FILE --json ARGS" for every case
// and checks exit status, error text, members and warnings.
func runCases(t *testing.T, base string, cases map[string][]cliCase) {
	t.Helper()
	for rel, cs := range cases {
		for _, tc := range cs {
			file := rel
			if !filepath.IsAbs(file) {
				file = filepath.Join(base, rel)
			}
			args := append([]string{"attest", "verify", file, "--json"}, tc.args...)
			code, stdout, stderr := runCLI(t, args...)
			name := filepath.Base(rel) + " " + strings.Join(tc.args, " ")
			if code != tc.code {
				t.Errorf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", name, code, tc.code, stdout, stderr)
				continue
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(stdout), &got); err != nil {
				t.Errorf("%s: --json output does not parse: %v: %q", name, err, stdout)
				continue
			}
			if tc.code != 0 {
				if got["verified"] != false || !strings.Contains(jsonString(got["error"]), tc.inErr) || !strings.Contains(stderr, tc.inErr) {
					t.Errorf("%s: want error containing %q, got %s / %s", name, tc.inErr, stdout, stderr)
				}
				continue
			}
			if got["verified"] != true {
				t.Errorf("%s: verified = %v", name, got["verified"])
			}
			if _, ok := got["advisories"].([]any); !ok {
				t.Errorf("%s: advisories is not an array: %s", name, stdout)
			}
			for k, want := range tc.want {
				if s, ok := matchJSON(got, k, want); !ok {
					t.Errorf("%s: %s = %q, want %q", name, k, s, want)
				}
			}
			if tc.warn != "" && !strings.Contains(jsonString(got["warnings"]), tc.warn) {
				t.Errorf("%s: warnings %v, want one containing %q", name, got["warnings"], tc.warn)
			}
		}
	}
}

// checkEveryFile fails for any file of folders (relative to base) that has
// no documented outcome in cases.
func checkEveryFile(t *testing.T, base string, folders []string, cases map[string][]cliCase) {
	t.Helper()
	for _, folder := range folders {
		entries, err := os.ReadDir(filepath.Join(base, folder))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if _, ok := cases[folder+"/"+e.Name()]; !ok {
				t.Errorf("no expected outcome for %s/%s", folder, e.Name())
			}
		}
	}
}

// TestAttestVerifyConformance runs "cloister attest verify" on every file
// of the nitro, tpm, ear and cca conformance folders and checks the
// documented outcome, exit status included.
func TestAttestVerifyConformance(t *testing.T) {
	t.Parallel()
	base := conformanceDir(t)
	dir := t.TempDir()

	// The GCP AK has no certificate: pin it, as a user would after
	// extracting it from the file.
	var g struct{ AK struct{ Public []byte } }
	raw, err := os.ReadFile(filepath.Join(base, "tpm/windows_gcp_shielded_vm.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	ak, err := tpm.ParseAK(g.AK.Public)
	if err != nil {
		t.Fatal(err)
	}
	akPEM, _ := ak.PublicKeyPEM()
	akFile := filepath.Join(dir, "gcp-ak.pem")
	os.WriteFile(akFile, akPEM, 0o644)

	ones := func(n int) string { return strings.Repeat("01", n) }
	cases := map[string][]cliCase{
		"nitro/nitrite/nitro_attestation.b64": {
			{args: []string{"--at", "2024-09-07T14:37:39.545Z"}, code: 0, want: map[string]string{"class": "nitro", "measurement": "e72a46ca80a260fb*", "debug": "false", "public_key": ones(32) + "*", "report_data": ones(64) + "*", "nonce": ones(32) + "*"}},
			{args: []string{"--at", "2024-09-07T14:37:39.545Z", "--replace-roots", "--trust-root", filepath.Join(base, "nitro/nitrite/root.pem")}, code: 0, want: map[string]string{"class": "nitro"}},
			{args: []string{"--at", "2024-09-07T14:37:39.545Z", "--replace-roots", "--trust-root", filepath.Join(base, "nitro/evervault/valid-certificate.der")}, code: 1, inErr: "certificate chain invalid"},
			{args: []string{"--at", "2024-09-07T14:37:39.545Z", "--replace-roots"}, code: 2, inErr: "--replace-roots needs"},
			{args: []string{"--at", "2024-09-07T18:00:00Z"}, code: 1, inErr: "outside validity window"},
			{args: nil, code: 1, inErr: "outside validity window"},
			{args: []string{"--at", "2024-09-07T14:37:39.545Z", "--nonce", "02"}, code: 1, inErr: "nonce mismatch"},
		},
		"nitro/nitrite/nitro_attestation_debug.b64": {
			{args: []string{"--at", "2024-09-07T14:38:06.508Z"}, code: 1, inErr: "debug"},
			{args: []string{"--at", "2024-09-07T14:38:06.508Z", "--allow-debug"}, code: 0, want: map[string]string{"debug": "true", "measurement": strings.Repeat("00", 48)}},
		},
		"nitro/nitrite/selfsigned_attestation.b64": {
			{args: []string{"--at", "2024-09-07T14:37:39Z", "--allow-debug"}, code: 1, inErr: "certificate chain invalid"},
		},
		"nitro/nitrite/root.pem":                {{code: 2, inErr: "RA-TLS evidence extension"}},
		"nitro/nitrite/LICENSE":                 {{code: 2}},
		"nitro/evervault/nitro.pem":             {{code: 2}},
		"nitro/evervault/LICENSE":               {{code: 2}},
		"nitro/evervault/valid-certificate.der": {{code: 2}},
		"nitro/evervault/valid-attestation-doc-base64": {
			{args: []string{"--at", "2023-09-18T15:03:30.86Z"}, code: 1, inErr: "debug"},
			{args: []string{"--at", "2023-09-18T15:03:30.86Z", "--allow-debug"}, code: 0, want: map[string]string{"class": "nitro", "debug": "true"}},
		},
		"nitro/evervault/valid-attestation-doc-bytes": {
			{args: []string{"--at", "2022-10-13T08:58:02.136Z"}, code: 0, want: map[string]string{"measurement": "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b", "debug": "false"}},
		},
		"nitro/evervault/debug-mode-attestation-doc-bytes": {
			{args: nil, code: 1, inErr: "certificate has expired"},
			{args: []string{"--allow-debug"}, code: 1, inErr: "certificate has expired"},
		},
		"tpm/windows_gcp_shielded_vm.json": {
			{args: nil, code: 1, inErr: "signer not trusted"},
			{args: []string{"--trust-root", akFile}, code: 0, want: map[string]string{"class": "tpm", "report_data": "", "debug": "false"}},
		},
		"tpm/LICENSE": {{code: 2}},
		"ear/ear_verify_pass.jwt": {
			{args: []string{"--trust-root", filepath.Join(base, "ear/ear_es256_pub.jwk.json")}, code: 0, want: map[string]string{"class": "ear", "tcb_status": "affirming", "issued_at": "2022-10-18T11:09:33Z"}},
			{args: []string{"--trust-root", filepath.Join(base, "ear/pkey.json"), "--class", "ear"}, code: 0, want: map[string]string{"tcb_status": "affirming"}},
			{args: nil, code: 1, inErr: "signer not trusted"},
			{args: []string{"--trust-root", filepath.Join(base, "cca/cca_platform.pub")}, code: 1, inErr: "signer not trusted"},
		},
		"ear/ear_es256_pub.jwk.json": {{code: 2}},
		"ear/pkey.json":              {{code: 2}},
		"ear/skey.json":              {{code: 2}},
		"ear/ear-claims.json":        {{code: 2}},
		"ear/ear-claims-tv-ok.json":  {{code: 2}},
		"ear/LICENSE":                {{code: 2}},
		"cca/rmm_legacy_evidence_tag907.cbor": {
			{args: []string{"--trust-root", filepath.Join(base, "cca/cca_platform.pub")}, code: 0, want: map[string]string{"class": "cca", "report_data": strings.Repeat("ab", 64), "measurement": strings.Repeat("00", 32)}},
			{args: nil, code: 1, inErr: "signer not trusted"},
		},
		"cca/cca_token.cbor": {
			{args: []string{"--trust-root", filepath.Join(base, "cca/cca_platform.pub")}, code: 0, want: map[string]string{"class": "cca"}},
			{args: []string{"--trust-root", filepath.Join(base, "ear/ear_es256_pub.jwk.json")}, code: 1, inErr: "signature invalid"},
		},
		"cca/cca_platform.pub":        {{code: 2}},
		"cca/cca_platform.pem":        {{code: 2}},
		"cca/CcaPlatformExample.diag": {{code: 2}},
		"cca/CcaRealmExample.diag":    {{code: 2}},
		"cca/LICENSE":                 {{code: 2}},
	}

	checkEveryFile(t, base, []string{"nitro/nitrite", "nitro/evervault", "tpm", "ear", "cca"}, cases)
	runCases(t, base, cases)
}

// TestAttestVerifyIssuesEAR verifies a real Nitro document, issues an EAR
// for it, and verifies that EAR with the verifier's public key.
func TestAttestVerifyIssuesEAR(t *testing.T) {
	t.Parallel()
	base := conformanceDir(t)
	out := filepath.Join(t.TempDir(), "result.jwt")
	code, _, stderr := runCLI(t, "attest", "verify", filepath.Join(base, "nitro/nitrite/nitro_attestation.b64"), "--at", "2024-09-07T14:37:39.545Z",
		"--ear-key", filepath.Join(base, "ear/skey.json"), "--ear-out", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	code, stdout, stderr := runCLI(t, "attest", "verify", out, "--trust-root", filepath.Join(base, "ear/pkey.json"), "--at", "2024-09-07T14:37:40Z", "--json")
	if code != 0 {
		t.Fatalf("EAR: exit %d: %s", code, stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatal(err)
	}
	if got["class"] != "ear" || got["tcb_status"] != "affirming" || !strings.HasPrefix(got["measurement"].(string), "e72a46ca") || got["hardware_protected"] != true {
		t.Fatalf("EAR claims: %s", stdout)
	}
	if code, _, _ := runCLI(t, "attest", "verify", filepath.Join(base, "nitro/nitrite/nitro_attestation.b64"), "--ear-out", out); code != 2 {
		t.Fatalf("--ear-out without --ear-key: exit %d", code)
	}
}

func TestAttestVerifyStdin(t *testing.T) {
	t.Parallel()
	base := conformanceDir(t)
	f, err := os.Open(filepath.Join(base, "ear/ear_verify_pass.jwt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	code, stdout, stderr := runCLIWithInput(t, f, "attest", "verify", "-", "--trust-root", filepath.Join(base, "ear/pkey.json"))
	if code != 0 || !strings.Contains(stdout, "verified: ear evidence") {
		t.Fatalf("stdin: exit %d %s %s", code, stdout, stderr)
	}
}

// TestAttestVerifyHardwareConformance runs "cloister attest verify" on
// every file of the sev-snp, tdx, dcap and ra-tls conformance folders:
// the documented outcome with claim values, the attacks a relying party
// relies on the command to catch (other report data, a nonce the evidence
// does not carry, debug isolates, collateral or certificates out of their
// window, roots that do not vouch for the chain), and exit 2 for files
// that are not evidence. docs/attestation-hw.md lists the same outcomes.
func TestAttestVerifyHardwareConformance(t *testing.T) {
	t.Parallel()
	base := conformanceDir(t)
	c := func(args ...string) []string { return args }
	snpCol := c("--collateral", filepath.Join(base, "sev-snp/vcek.testcer"), "--collateral", filepath.Join(base, "sev-snp/ask_ark_milan.pem"))
	with := func(a []string, more ...string) []string { return append(append([]string{}, a...), more...) }
	var pcs []string
	for _, f := range []string{"sample_tcbInfo_response", "sample_qeIdentity_response", "pckcrl", "rootcrl.der", "tcbInfoIssuerChain.pem", "pckCrlIssuerChain.pem", "qeIdentityIssuerChain.pem", "trusted_root.pem"} {
		pcs = append(pcs, "--collateral", filepath.Join(base, "tdx", f))
	}
	pcsV5 := append([]string{}, pcs...)
	pcsV5[1] = filepath.Join(base, "tdx/sample_tcbinfo_response_v5")
	sgxCol := c("--collateral", filepath.Join(base, "dcap/sgx_quote_collateral.json"))
	tdxCol := c("--collateral", filepath.Join(base, "dcap/tdx_quote_collateral.json"))
	outdatedCol := c("--collateral", filepath.Join(base, "dcap/tdx_quote_outdated_collateral.json"))
	const (
		in2024 = "2024-06-01T00:00:00Z"
		in2023 = "2023-07-01T00:00:00Z"
		in2025 = "2025-07-01T00:00:00Z"
		in2026 = "2026-03-01T00:00:00Z"
	)
	zeros := func(n int) string { return strings.Repeat("00", n) }
	notEvidence := []cliCase{{code: 2, inErr: "unknown evidence class"}}

	cases := map[string][]cliCase{
		"sev-snp/attestation.bin": {
			{args: with(snpCol, "--at", in2024, "--allow-debug"), code: 0, warn: "no AMD CRL given", want: map[string]string{
				"class": "sev-snp", "format": "sev-snp-report-v2", "hardware_protected": "true", "debug": "true", "tcb_status": "",
				"measurement": "b07af962*2b01", "report_data": "0102030405" + zeros(59),
				"measurements.chip_id": "3ac3fe21*", "measurements.host_data": zeros(32), "measurements.family_id": zeros(16), "measurements.image_id": zeros(16),
				"svn.snp": "5", "svn.bootloader": "2", "svn.microcode": "68", "extra.policy": "0xb0000", "signer": "SEV-VCEK 3ac3fe21e13fb099"}},
			{args: with(snpCol, "--at", in2024, "--allow-debug", "--report-data", "0102030405"), code: 0, want: map[string]string{"class": "sev-snp"}},
			{args: with(snpCol, "--at", in2024), code: 1, inErr: "debug mode isolate refused"},
			{args: with(snpCol, "--at", in2024, "--allow-debug", "--report-data", "0102030406"), code: 1, inErr: "report data mismatch"},
			{args: with(snpCol, "--at", in2024, "--allow-debug", "--nonce", "0011"), code: 1, inErr: "nonce mismatch"},
			{args: with(snpCol, "--at", "2029-09-25T00:00:00Z", "--allow-debug"), code: 1, inErr: "outside validity window"},
			{args: with(snpCol, "--at", "2022-09-01T00:00:00Z", "--allow-debug"), code: 1, inErr: "outside validity window"},
			{args: c("--at", in2024, "--allow-debug"), code: 1, inErr: "certificate chain invalid"},
			{args: with(snpCol, "--at", in2024, "--allow-debug", "--replace-roots", "--trust-root", filepath.Join(base, "sev-snp/ask_ark_genoa.pem")), code: 1, inErr: "certificate chain invalid"},
		},
		"sev-snp/vcek.testcer":      notEvidence,
		"sev-snp/ask_ark_milan.pem": notEvidence,
		"sev-snp/ask_ark_genoa.pem": notEvidence,
		"sev-snp/LICENSE":           notEvidence,

		"tdx/tdx_prod_quote_SPR_E4.dat": {
			{args: c("--at", in2023), code: 0, warn: "39 bytes after the quote", want: map[string]string{
				"class": "tdx", "format": "tdx-quote-v4", "debug": "false", "hardware_protected": "true", "tcb_status": "", "advisories": "",
				"measurement": "6363b8043668a3ad*", "extra.fmspc": "50806f000000"}},
			{args: c("--at", in2023, "--replace-roots", "--trust-root", filepath.Join(base, "tdx/trusted_root.pem")), code: 0, warn: "no DCAP collateral", want: map[string]string{"class": "tdx"}},
			{args: c("--at", in2023, "--replace-roots", "--trust-root", filepath.Join(base, "sev-snp/ask_ark_milan.pem")), code: 1, inErr: "certificate chain invalid"},
			{args: with(pcs, "--at", in2023), code: 1, inErr: "no matching TCB level found"},
			{args: with(pcs, "--at", in2025), code: 1, inErr: "outside validity window"},
			{args: c("--at", in2023, "--collateral", filepath.Join(base, "tdx/sample_tcbInfo_response")), code: 1, inErr: "must be given together"},
			{args: c("--at", "2053-01-01T00:00:00Z"), code: 1, inErr: "outside validity window"},
			{args: c("--at", in2023, "--report-data", "00"), code: 1, inErr: "report data mismatch"},
		},
		"tdx/quote_v5_sample.dat": {
			{args: c("--at", "2026-02-15T00:00:00Z"), code: 0, want: map[string]string{"class": "tdx", "format": "tdx-quote-v5", "debug": "false", "tcb_status": ""}},
			{args: c("--at", in2023), code: 1, inErr: "outside validity window"},
			{args: with(pcsV5, "--at", "2026-02-15T00:00:00Z"), code: 1, inErr: "outside validity window"},
		},
		"tdx/sample_tcbInfo_response":    notEvidence,
		"tdx/sample_tcbinfo_response_v5": notEvidence,
		"tdx/sample_qeIdentity_response": notEvidence,
		"tdx/pckcrl":                     notEvidence,
		"tdx/rootcrl.der":                notEvidence,
		"tdx/tcbInfoIssuerChain.pem":     notEvidence,
		"tdx/pckCrlIssuerChain.pem":      notEvidence,
		"tdx/qeIdentityIssuerChain.pem":  notEvidence,
		"tdx/trusted_root.pem":           notEvidence,
		"tdx/LICENSE":                    notEvidence,

		"dcap/sgx_quote": {
			{args: with(sgxCol, "--at", in2025), code: 0, want: map[string]string{
				"class": "sgx", "format": "sgx-quote-v3", "debug": "false", "hardware_protected": "true",
				"tcb_status": "ConfigurationAndSWHardeningNeeded", "advisories": "INTEL-SA-00289,INTEL-SA-00615",
				"measurement":           "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb",
				"measurements.mrsigner": "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6",
				"extra.fmspc":           "00a067110000", "extra.qe_tcb_status": "UpToDate", "svn.pce_svn": "13"}},
			{args: c("--at", in2025), code: 0, warn: "no DCAP collateral", want: map[string]string{"tcb_status": "", "advisories": ""}},
			{args: with(sgxCol, "--at", "2025-07-20T00:00:00Z"), code: 1, inErr: "outside validity window"},
			{args: with(sgxCol, "--at", "2025-06-18T00:00:00Z"), code: 1, inErr: "outside validity window"},
			{args: with(tdxCol, "--at", in2025), code: 1, inErr: "certificate chain invalid"},
			{args: with(sgxCol, "--at", in2025, "--report-data", "ff"), code: 1, inErr: "report data mismatch"},
		},
		"dcap/tdx_quote": {
			{args: with(tdxCol, "--at", in2025), code: 0, want: map[string]string{
				"class": "tdx", "format": "tdx-quote-v4", "debug": "false", "tcb_status": "UpToDate", "advisories": "",
				"measurement": "91eb2b44d141d4ec*", "extra.fmspc": "b0c06f000000", "extra.tdx_module_tcb_status": "UpToDate", "svn.tee_tcb_svn1": "1"}},
			{args: with(tdxCol, "--at", "2025-07-20T00:00:00Z"), code: 1, inErr: "outside validity window"},
			{args: with(sgxCol, "--at", in2025), code: 1, inErr: "certificate chain invalid"},
		},
		"dcap/tdx_quote_outdated": {
			{args: with(outdatedCol, "--at", in2026), code: 1, inErr: "no matching TCB level found"},
			{args: c("--at", in2026), code: 0, warn: "no DCAP collateral", want: map[string]string{"class": "tdx", "format": "tdx-quote-v5", "tcb_status": ""}},
			{args: with(outdatedCol, "--at", "2026-03-21T00:00:00Z"), code: 1, inErr: "outside validity window"},
		},
		"dcap/sgx_quote_collateral.json":          notEvidence,
		"dcap/tdx_quote_collateral.json":          notEvidence,
		"dcap/tdx_quote_outdated_collateral.json": notEvidence,
		"dcap/LICENSE":                            notEvidence,

		"ra-tls/gramine-cert.pem": {
			{code: 1, inErr: "debug mode isolate refused"},
			{args: c("--allow-debug"), code: 0, warn: "no DCAP collateral", want: map[string]string{
				"class": "sgx", "format": "ra-tls+sgx-quote-v3", "debug": "true", "tcb_status": "", "measurement": "0866e7ca*", "public_key": "3076301006072a8648ce3d0201*"}},
			{args: c("--allow-debug", "--at", "2031-01-01T00:00:00Z"), code: 1, inErr: "outside validity window"},
		},
		"ra-tls/intel-sgxsdk-cert.pem": {
			{code: 1, inErr: "debug mode isolate refused"},
			{args: c("--allow-debug"), code: 0, want: map[string]string{"class": "sgx", "format": "ra-tls+sgx-quote-v3", "debug": "true", "measurement": "09e218a4*"}},
			{args: c("--allow-debug", "--at", "2023-12-01T00:00:00Z"), code: 1, inErr: "outside validity window"},
		},
		"ra-tls/rats-tls-cert.pem": {
			{args: c("--allow-debug"), code: 1, inErr: "2024-02-22"},
			{args: c("--allow-debug", "--at", "2023-06-01T00:00:00Z"), code: 0, want: map[string]string{"class": "sgx", "debug": "true", "measurement": "38e1b40b*"}},
			{args: c("--at", "2023-06-01T00:00:00Z"), code: 1, inErr: "debug mode isolate refused"},
		},
		"ra-tls/Interoperable-RA-TLS-SGX-TDX-evidence-formats.md": notEvidence,
		"ra-tls/Interoperable-RA-TLS-cert-edvidence-formats.md":   notEvidence,
		"ra-tls/LICENSE": notEvidence,
	}
	checkEveryFile(t, base, []string{"sev-snp", "tdx", "dcap", "ra-tls"}, cases)
	runCases(t, base, cases)
}

// moduleRoot is the directory holding go.mod.
func moduleRoot(t *testing.T) string {
	return corpus.ModuleRoot(t)
}

// TestAttestVerifyTampered verifies flipped copies of real evidence through
// the command line: a byte in the signed body, in the signature and in a
// certificate, each refused with exit 1 and the reason.
func TestAttestVerifyTampered(t *testing.T) {
	t.Parallel()
	base := conformanceDir(t)
	dir := t.TempDir()
	n := 0
	flipped := func(rel string, off func(b []byte) int) string {
		b := mustRead(t, filepath.Join(base, rel))
		b[off(b)] ^= 1
		n++
		out := filepath.Join(dir, fmt.Sprintf("%d-%s", n, filepath.Base(rel)))
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return out
	}
	at := func(n int) func([]byte) int { return func([]byte) int { return n } }
	fromEnd := func(n int) func([]byte) int { return func(b []byte) int { return len(b) - n } }
	snpCol := []string{"--collateral", filepath.Join(base, "sev-snp/vcek.testcer"), "--collateral", filepath.Join(base, "sev-snp/ask_ark_milan.pem"), "--at", "2024-06-01T00:00:00Z", "--allow-debug"}
	vcek := flipped("sev-snp/vcek.testcer", fromEnd(10))
	cases := map[string][]cliCase{
		flipped("sev-snp/attestation.bin", at(0x50)):              {{args: snpCol, code: 1, inErr: "signature invalid"}},
		flipped("sev-snp/attestation.bin", at(0x2a0)):             {{args: snpCol, code: 1, inErr: "signature invalid"}},
		filepath.Join(base, "sev-snp/attestation.bin"):            {{args: []string{"--collateral", vcek, "--collateral", filepath.Join(base, "sev-snp/ask_ark_milan.pem"), "--at", "2024-06-01T00:00:00Z", "--allow-debug"}, code: 1, inErr: "certificate chain invalid"}},
		flipped("dcap/sgx_quote", at(48+64)):                      {{args: []string{"--at", "2025-07-01T00:00:00Z"}, code: 1, inErr: "signature invalid"}},
		flipped("tdx/tdx_prod_quote_SPR_E4.dat", at(48+584+4+10)): {{args: []string{"--at", "2023-07-01T00:00:00Z"}, code: 1, inErr: "signature invalid"}},
	}
	// The RA-TLS certificate, as DER: its own signature, and the quote
	// inside its evidence extension.
	blk, _ := pem.Decode(mustRead(t, filepath.Join(base, "ra-tls/gramine-cert.pem")))
	if blk == nil {
		t.Fatal("gramine-cert.pem: no PEM block")
	}
	for name, off := range map[string]int{"sig": len(blk.Bytes) - 5, "quote": bytes.Index(blk.Bytes, []byte{0xd9, 0xea, 0x60}) + 200} {
		der := bytes.Clone(blk.Bytes)
		der[off] ^= 1
		p := filepath.Join(dir, "gramine-"+name+".der")
		if err := os.WriteFile(p, der, 0o644); err != nil {
			t.Fatal(err)
		}
		cases[p] = []cliCase{{args: []string{"--allow-debug", "--class", "ra-tls"}, code: 1, inErr: "signature invalid"}}
	}
	runCases(t, base, cases)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAttestVerifyRecordedTPM verifies the swtpm bundle recorded in
// attest/tpm/testdata through the command line (no swtpm needed): with
// its AK pinned and the report data it binds it verifies; replayed to a
// verifier that expects a fresh nonce or other report data, or verified
// without the AK pinned, it is refused.
func TestAttestVerifyRecordedTPM(t *testing.T) {
	t.Parallel()
	td := filepath.Join(moduleRoot(t), "attest", "tpm", "testdata")
	ak := filepath.Join(td, "swtpm_ak.pem")
	var b struct {
		ReportData         string `json:"report_data"`
		RuntimeMeasurement string `json:"runtime_measurement"`
	}
	if err := json.Unmarshal(mustRead(t, filepath.Join(td, "swtpm_bundle.json")), &b); err != nil {
		t.Fatal(err)
	}
	runCases(t, td, map[string][]cliCase{
		"swtpm_bundle.json": {
			{args: []string{"--trust-root", ak, "--report-data", b.ReportData}, code: 0, warn: "a TPM quote proves measured state, not isolation", want: map[string]string{
				"class": "tpm", "format": "cloister-tpm-evidence/v1", "hardware_protected": "false", "debug": "false",
				"report_data": b.ReportData, "nonce": b.ReportData, "measurement": b.RuntimeMeasurement, "measurements.pcr0": strings.Repeat("00", 32), "extra.qualifying_data": "raw"}},
			{args: []string{"--trust-root", ak, "--report-data", strings.Repeat("5a", 64)}, code: 1, inErr: "report data mismatch"},
			{args: []string{"--trust-root", ak, "--nonce", strings.Repeat("5a", 64)}, code: 1, inErr: "nonce mismatch"},
			{args: nil, code: 1, inErr: "signer not trusted"},
			{args: []string{"--trust-root", filepath.Join(conformanceDir(t), "ear/ear_es256_pub.jwk.json")}, code: 1, inErr: "signer not trusted"},
		},
	})
}
