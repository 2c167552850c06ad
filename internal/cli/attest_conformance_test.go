package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/attest/tpm"
)

// conformanceDir is ../shared/conformance/attestation relative to the
// module root.
func conformanceDir(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "..", "shared", "conformance", "attestation")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

type cliCase struct {
	args  []string          // after the file
	code  int               // exit status
	want  map[string]string // --json members that must match (prefix match for hex with a trailing '*')
	inErr string            // substring of the error output when code != 0
}

// TestAttestVerifyConformance runs "cloister attest verify" on every file
// of the nitro, tpm, ear and cca conformance folders and checks the
// documented outcome, exit status included.
func TestAttestVerifyConformance(t *testing.T) {
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

	// Every file of these folders must have a documented outcome.
	for _, folder := range []string{"nitro/nitrite", "nitro/evervault", "tpm", "ear", "cca"} {
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

	for rel, cs := range cases {
		for _, tc := range cs {
			args := append([]string{"attest", "verify", filepath.Join(base, rel), "--json"}, tc.args...)
			code, stdout, stderr := runCLI(t, args...)
			name := rel + " " + strings.Join(tc.args, " ")
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
				if got["verified"] != false || !strings.Contains(got["error"].(string), tc.inErr) || !strings.Contains(stderr, tc.inErr) {
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
				v := got[k]
				var s string
				switch x := v.(type) {
				case string:
					s = x
				case bool:
					if x {
						s = "true"
					} else {
						s = "false"
					}
				case nil:
					s = ""
				}
				if p, ok := strings.CutSuffix(want, "*"); ok {
					if !strings.HasPrefix(s, p) {
						t.Errorf("%s: %s = %q, want prefix %q", name, k, s, p)
					}
				} else if s != want {
					t.Errorf("%s: %s = %q, want %q", name, k, s, want)
				}
			}
		}
	}
}

// TestAttestVerifyIssuesEAR verifies a real Nitro document, issues an EAR
// for it, and verifies that EAR with the verifier's public key.
func TestAttestVerifyIssuesEAR(t *testing.T) {
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
	base := conformanceDir(t)
	f, err := os.Open(filepath.Join(base, "ear/ear_verify_pass.jwt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rootCmd.SetIn(f)
	defer rootCmd.SetIn(nil)
	code, stdout, stderr := runCLI(t, "attest", "verify", "-", "--trust-root", filepath.Join(base, "ear/pkey.json"))
	if code != 0 || !strings.Contains(stdout, "verified: ear evidence") {
		t.Fatalf("stdin: exit %d %s %s", code, stdout, stderr)
	}
}
