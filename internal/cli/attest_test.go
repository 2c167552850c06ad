package cli

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/attest/tpm/swtpm"
	"github.com/cloisterhq/cloister/keys"
)

// runCLI runs the cloister command line in-process, on a command tree of
// its own, and returns its exit status and output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runCLIWithInput(t, nil, args...)
}

// runCLIWithInput is runCLI with stdin as the commands' standard input.
func runCLIWithInput(t *testing.T, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	root := newRoot()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	if stdin != nil {
		root.SetIn(stdin)
	}
	code = run(root, args)
	return code, out.String(), errb.String()
}

func writePlatformKey(t *testing.T, dir string) ed25519.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "platform.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return pub
}

func TestAttestSoftwareKeyFile(t *testing.T) {
	t.Parallel()
	// The node's own key file format (DATA_DIR/platform.key).
	dir := t.TempDir()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Save(filepath.Join(dir, "platform.key")); err != nil {
		t.Fatal(err)
	}
	ev, pub := filepath.Join(dir, "ev.json"), filepath.Join(dir, "platform.pub")
	if code, _, stderr := runCLI(t, "attest", "quote", "--class", "software", "--data-dir", dir, "--report-data", "aa", "--out", ev, "--pub-out", pub); code != 0 {
		t.Fatalf("quote: exit %d: %s", code, stderr)
	}
	b, _ := os.ReadFile(pub)
	if strings.TrimSpace(string(b)) != k.Public().SigningString() {
		t.Fatalf("pub-out %q, key file's signing key %q", b, k.Public().SigningString())
	}
	if code, _, stderr := runCLI(t, "attest", "verify", ev, "--trust-root", pub, "--report-data", "aa"); code != 0 {
		t.Fatalf("verify: exit %d: %s", code, stderr)
	}
}

func TestAttestSoftwareRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyDir := t.TempDir()
	writePlatformKey(t, keyDir)
	ev, pub := filepath.Join(dir, "ev.json"), filepath.Join(dir, "platform.pub")
	rd := "00ff" + strings.Repeat("ab", 10)
	if code, _, stderr := runCLI(t, "attest", "quote", "--class", "software", "--key", filepath.Join(keyDir, "platform.key"), "--report-data", rd, "--out", ev, "--pub-out", pub); code != 0 {
		t.Fatalf("quote: exit %d: %s", code, stderr)
	}
	code, stdout, stderr := runCLI(t, "attest", "verify", ev, "--trust-root", pub, "--report-data", rd, "--json")
	if code != 0 {
		t.Fatalf("verify: exit %d: %s", code, stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if got["class"] != "software" || got["verified"] != true || !strings.HasPrefix(got["report_data"].(string), rd) || got["debug"] != false {
		t.Fatalf("claims: %s", stdout)
	}
	if adv, ok := got["advisories"].([]any); !ok || len(adv) != 0 {
		t.Fatalf("advisories must be an empty array: %s", stdout)
	}
	if m, _ := got["measurement"].(string); len(m) != 64 {
		t.Fatalf("measurement %q", m)
	}
	if !strings.Contains(stdout, "no hardware protection") {
		t.Fatalf("warning missing: %s", stdout)
	}

	// Wrong report data: verification fails (exit 1) with a JSON verdict.
	code, stdout, _ = runCLI(t, "attest", "verify", ev, "--trust-root", pub, "--report-data", "01", "--json")
	if code != 1 || !strings.Contains(stdout, `"verified":false`) || !strings.Contains(stdout, "report data mismatch") {
		t.Fatalf("wrong report data: exit %d %s", code, stdout)
	}
	// No pinned key: untrusted signer, exit 1.
	code, _, stderr = runCLI(t, "attest", "verify", ev)
	if code != 1 || !strings.Contains(stderr, "signer not trusted") {
		t.Fatalf("no pinned key: exit %d %s", code, stderr)
	}
	// Unknown input: exit 2.
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte{0x00, 0x01, 0x02, 0x03}, 0o644)
	if code, _, stderr = runCLI(t, "attest", "verify", junk); code != 2 {
		t.Fatalf("junk: exit %d %s", code, stderr)
	}
	if code, _, _ = runCLI(t, "attest", "verify", filepath.Join(dir, "missing")); code != 2 {
		t.Fatalf("missing file: exit %d", code)
	}
	if code, _, _ = runCLI(t, "attest", "quote", "--class", "software", "--key", filepath.Join(keyDir, "platform.key"), "--report-data", strings.Repeat("00", 65)); code != 2 {
		t.Fatalf("65-byte report data: exit %d", code)
	}
}

func TestAttestTPMRoundTrip(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm not installed (Debian package swtpm; scripts/test installs it)")
	}
	s, err := swtpm.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	dir := t.TempDir()
	ev, ak := filepath.Join(dir, "tpm.json"), filepath.Join(dir, "ak.pem")
	rd := strings.Repeat("5a", 64)
	if code, _, stderr := runCLI(t, "attest", "quote", "--class", "tpm", "--tpm", s.Spec, "--report-data", rd, "--out", ev, "--pub-out", ak); code != 0 {
		t.Fatalf("quote: exit %d: %s", code, stderr)
	}
	code, stdout, stderr := runCLI(t, "attest", "verify", ev, "--trust-root", ak, "--report-data", rd, "--json")
	if code != 0 {
		t.Fatalf("verify: exit %d: %s", code, stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatal(err)
	}
	if got["class"] != "tpm" || got["report_data"] != rd || got["verified"] != true {
		t.Fatalf("claims %s", stdout)
	}
	if code, _, stderr = runCLI(t, "attest", "verify", ev); code != 1 || !strings.Contains(stderr, "signer not trusted") {
		t.Fatalf("unpinned AK: exit %d %s", code, stderr)
	}
	// An event log from another machine does not replay to this TPM's
	// PCRs: the quote is refused rather than producing unverifiable evidence.
	var g struct{ Log struct{ Raw []byte } }
	raw, err := os.ReadFile(filepath.Join(conformanceDir(t), "tpm/windows_gcp_shielded_vm.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "foreign.log")
	os.WriteFile(logFile, g.Log.Raw, 0o644)
	if code, _, stderr = runCLI(t, "attest", "quote", "--class", "tpm", "--tpm", s.Spec, "--report-data", rd, "--event-log", logFile); code != 1 || !strings.Contains(stderr, "does not describe this TPM") {
		t.Fatalf("foreign event log: exit %d %s", code, stderr)
	}
}
