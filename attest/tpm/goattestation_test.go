package tpm

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/attest"
)

func conformance(t testing.TB, rel string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "..", "shared", "conformance", "attestation", rel)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

func loadGCP(t testing.TB) ([]byte, crypto.PublicKey) {
	t.Helper()
	data, err := os.ReadFile(conformance(t, "tpm/windows_gcp_shielded_vm.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g goAttestationJSON
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	ak, err := ParseAK(g.AK.Public)
	if err != nil {
		t.Fatal(err)
	}
	return data, ak.Key
}

func verifyTPM(data []byte, opts attest.VerifyOptions, coll ...[]byte) (*attest.Claims, error) {
	return attest.Verify(context.Background(), &attest.Evidence{Class: attest.ClassTPM, Data: data, Collateral: coll}, opts)
}

func TestGCPShieldedVM(t *testing.T) {
	data, akKey := loadGCP(t)
	if c, err := attest.Detect(data); err != nil || c != attest.ClassTPM {
		t.Fatalf("detect: %v %v", c, err)
	}
	if _, err := verifyTPM(data, attest.VerifyOptions{}); !errors.Is(err, attest.ErrUntrustedSigner) {
		t.Fatalf("unpinned AK: %v, want ErrUntrustedSigner", err)
	}
	c, err := verifyTPM(data, attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{akKey}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Extra["pcr_bank"] != "sha1" || len(c.ReportData) != 0 || len(c.Nonce) != 0 {
		t.Fatalf("claims: %+v", c)
	}
	if n, _ := c.Extra["event_log_events"].(int); n < 10 {
		t.Fatalf("event log replayed %v events", c.Extra["event_log_events"])
	}
	if len(c.Measurements) != 25 || len(c.Measurements["pcr0"]) != 20 {
		t.Fatalf("measurements: %d", len(c.Measurements))
	}
	t.Logf("replayed %v events, pcr0 %x", c.Extra["event_log_events"], c.Measurements["pcr0"])
}

// mutate decodes the JSON, applies f to the decoded structure, re-encodes.
func mutate(t *testing.T, data []byte, f func(g map[string]any)) []byte {
	t.Helper()
	var g map[string]any
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	f(g)
	out, err := json.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func flipB64(t *testing.T, s string, i int) string {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	if i < 0 {
		i += len(b)
	}
	b[i] ^= 1
	return base64.StdEncoding.EncodeToString(b)
}

func TestGCPTampered(t *testing.T) {
	data, akKey := loadGCP(t)
	opts := attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{akKey}}
	sub := func(g map[string]any, k string) map[string]any { return g[k].(map[string]any) }
	cases := []struct {
		name string
		f    func(g map[string]any)
		want error
	}{
		{"quote body", func(g map[string]any) { q := sub(g, "Quote"); q["Quote"] = flipB64(t, q["Quote"].(string), -3) }, attest.ErrSignature},
		{"signature", func(g map[string]any) { q := sub(g, "Quote"); q["Signature"] = flipB64(t, q["Signature"].(string), -3) }, attest.ErrSignature},
		{"PCR value", func(g map[string]any) {
			p := sub(g, "Log")["PCRs"].([]any)[0].(map[string]any)
			p["Digest"] = flipB64(t, p["Digest"].(string), 0)
		}, attest.ErrSignature},
		{"event log", func(g map[string]any) { l := sub(g, "Log"); l["Raw"] = flipB64(t, l["Raw"].(string), -10) }, attest.ErrMeasurement},
		{"nonce", func(g map[string]any) { sub(g, "Quote")["Nonce"] = base64.StdEncoding.EncodeToString([]byte("x")) }, attest.ErrNonce},
		{"AK key", func(g map[string]any) { a := sub(g, "AK"); a["Public"] = flipB64(t, a["Public"].(string), -5) }, attest.ErrUntrustedSigner},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verifyTPM(mutate(t, data, tc.f), opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// An event log given as collateral must also replay.
	if _, err := verifyTPM(data, opts, []byte(strings.Repeat("x", 100))); !errors.Is(err, attest.ErrMalformed) {
		t.Fatalf("junk event log collateral: %v", err)
	}
}
