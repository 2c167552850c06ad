package tpm

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/internal/corpus"
)

func conformance(t testing.TB, rel string) string {
	return corpus.Path(t, "attestation/"+rel)
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
	t.Parallel()
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
	t.Parallel()
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

func loadRecorded(t testing.TB) ([]byte, crypto.PublicKey) {
	t.Helper()
	data, err := os.ReadFile("testdata/swtpm_bundle.json")
	if err != nil {
		t.Fatal(err)
	}
	pemAK, err := os.ReadFile("testdata/swtpm_ak.pem")
	if err != nil {
		t.Fatal(err)
	}
	ta, err := attest.ParseTrustAnchors("swtpm_ak.pem", pemAK)
	if err != nil || len(ta.Keys) != 1 {
		t.Fatalf("AK: %v", err)
	}
	return data, ta.Keys[0]
}

// TestRecordedSwtpmBundle verifies a bundle recorded from a real swtpm
// (testdata/README.md), so the bundle verifier is exercised on every
// machine, swtpm installed or not: claim values, the attacks that matter
// for a quote (tampered body, signature, AK, report data; evidence
// replayed to a verifier expecting a fresh nonce), each with its error.
func TestRecordedSwtpmBundle(t *testing.T) {
	t.Parallel()
	data, ak := loadRecorded(t)
	opts := attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{ak}}
	c, err := verifyTPM(data, opts)
	if err != nil {
		t.Fatal(err)
	}
	var b Bundle
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	rd, _ := hex.DecodeString(b.ReportData)
	if !bytes.HasPrefix(rd, []byte("cloister recorded swtpm quote, report data 64 bytes")) {
		t.Fatalf("recorded report data %q", rd)
	}
	runtime, _ := hex.DecodeString(b.RuntimeMeasurement)
	if c.Class != attest.ClassTPM || c.Format != Format || !bytes.Equal(c.ReportData, rd) || !bytes.Equal(c.Nonce, rd) || !bytes.Equal(c.Measurement, runtime) {
		t.Fatalf("claims: class %s format %s report data %x nonce %x measurement %x", c.Class, c.Format, c.ReportData, c.Nonce, c.Measurement)
	}
	if c.HardwareProtected || c.Debug || len(c.Warnings) != 1 || c.Warnings[0] != NoMemoryProtectionWarning {
		t.Fatalf("hardware %v debug %v warnings %q", c.HardwareProtected, c.Debug, c.Warnings)
	}
	if !bytes.Equal(c.Measurements["pcr23"], extendFromZero(runtime)) || !bytes.Equal(c.Measurements["pcr0"], make([]byte, 32)) || len(c.Measurements) != 11 {
		t.Fatalf("measurements %x", c.Measurements)
	}
	if c.Extra["qualifying_data"] != QualifyingRaw || c.Extra["pcr_bank"] != "sha256" || c.Signer == "" {
		t.Fatalf("extra %v signer %q", c.Extra, c.Signer)
	}
	if err := attest.Validate(c, attest.ReferenceValues{Measurements: [][]byte{runtime}, ReportData: rd}, time.Now()); err != nil {
		t.Fatal(err)
	}

	// Replay: the evidence is genuine but was made for another session.
	fresh := bytes.Repeat([]byte{0x5a}, 64)
	if err := attest.Validate(c, attest.ReferenceValues{ReportData: fresh}, time.Now()); !errors.Is(err, attest.ErrReportData) {
		t.Errorf("replayed to a verifier expecting other report data: %v", err)
	}
	if err := attest.Validate(c, attest.ReferenceValues{Nonce: fresh}, time.Now()); !errors.Is(err, attest.ErrNonce) {
		t.Errorf("replayed to a verifier expecting another nonce: %v", err)
	}
	if err := attest.Validate(c, attest.ReferenceValues{RequireHardware: true}, time.Now()); !errors.Is(err, attest.ErrTCB) {
		t.Errorf("RequireHardware: %v", err)
	}

	sub := func(field string, f func(v []byte)) []byte {
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		v, err := base64.StdEncoding.DecodeString(m[field].(string))
		if err != nil {
			t.Fatal(err)
		}
		f(v)
		m[field] = base64.StdEncoding.EncodeToString(v)
		out, _ := json.Marshal(m)
		return out
	}
	for name, tc := range map[string]struct {
		data []byte
		opts attest.VerifyOptions
		want error
	}{
		"qualifying data in the quote":  {sub("quote", func(v []byte) { v[len(v)-80] ^= 1 }), opts, attest.ErrSignature},
		"PCR digest in the quote":       {sub("quote", func(v []byte) { v[len(v)-1] ^= 1 }), opts, attest.ErrSignature},
		"signature":                     {sub("signature", func(v []byte) { v[len(v)-3] ^= 1 }), opts, attest.ErrSignature},
		"AK public key":                 {sub("ak_public", func(v []byte) { v[len(v)-3] ^= 1 }), opts, attest.ErrUntrustedSigner},
		"AK made unrestricted":          {sub("ak_public", func(v []byte) { v[5] &^= 0x01 }), opts, attest.ErrUntrustedSigner},
		"report data claimed":           {bytes.Replace(data, []byte(b.ReportData[:8]), []byte("00000000"), 1), opts, attest.ErrReportData},
		"runtime measurement claimed":   {bytes.Replace(data, []byte(b.RuntimeMeasurement), []byte(strings.Repeat("ab", 32)), 1), opts, attest.ErrMeasurement},
		"unpinned":                      {data, attest.VerifyOptions{}, attest.ErrUntrustedSigner},
		"pinned to another key":         {data, attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{mustGCPKey(t)}}, attest.ErrUntrustedSigner},
		"trailing data after the JSON":  {append(bytes.Clone(data), []byte(`{}`)...), opts, attest.ErrMalformed},
		"event log that does not match": {data, opts, attest.ErrMeasurement},
	} {
		var coll [][]byte
		if name == "event log that does not match" {
			var g goAttestationJSON
			gcp, _ := loadGCP(t)
			_ = json.Unmarshal(gcp, &g)
			coll = [][]byte{g.Log.Raw}
		}
		if _, err := verifyTPM(tc.data, tc.opts, coll...); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func mustGCPKey(t testing.TB) crypto.PublicKey {
	_, k := loadGCP(t)
	return k
}
