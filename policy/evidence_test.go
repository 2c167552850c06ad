package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/attest"
	_ "github.com/cloisterhq/cloister/attest/all"
)

// recordedTPM is the TPM bundle a real swtpm produced (attest/tpm/testdata):
// PCRs 0–7 zero (swtpm has no firmware), PCR 23 the runtime.
func recordedTPM(t *testing.T) (data []byte, akPEM string, runtime string) {
	t.Helper()
	data, err := os.ReadFile("../attest/tpm/testdata/swtpm_bundle.json")
	if err != nil {
		t.Fatal(err)
	}
	ak, err := os.ReadFile("../attest/tpm/testdata/swtpm_ak.pem")
	if err != nil {
		t.Fatal(err)
	}
	var b struct {
		Runtime string `json:"runtime_measurement"`
	}
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	return data, string(ak), b.Runtime
}

// judge runs the policy's reference values for class on evidence.
func judge(t *testing.T, p *Policy, class attest.Class, data []byte, at time.Time) error {
	t.Helper()
	ref, opts, err := p.ReferenceValues(class)
	if err != nil {
		t.Fatal(err)
	}
	opts.Now = at
	c, err := attest.Verify(context.Background(), &attest.Evidence{Class: class, Data: data}, opts)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return attest.Validate(c, ref, at)
}

func zeroPCRs(from, to int) map[string]any {
	m := map[string]any{}
	for i := from; i <= to; i++ {
		m[strings.TrimSpace(string(rune('0'+i)))] = strings.Repeat("00", 32)
	}
	return m
}

// TestPolicyJudgesTPMBootChain: a tpm isolate that pins PCRs 0–7 accepts
// a quote only from a machine that booted that chain.
func TestPolicyJudgesTPMBootChain(t *testing.T) {
	t.Parallel()
	data, ak, runtime := recordedTPM(t)
	withPCRs := func(sets ...any) *Policy {
		doc := psiDoc(t)
		doc["isolates"] = []any{map[string]any{"class": "tpm", "platform_keys": []any{ak}, "measurements": []any{runtime}, "pcrs": sets}}
		return mustParse(t, doc)
	}
	now := time.Now()
	if err := judge(t, withPCRs(zeroPCRs(0, 7)), attest.ClassTPM, data, now); err != nil {
		t.Fatalf("the boot chain the quote shows: %v", err)
	}
	other := zeroPCRs(0, 7)
	fw := sha256.Sum256([]byte("another firmware"))
	other["0"] = hex.EncodeToString(fw[:])
	err := judge(t, withPCRs(other), attest.ClassTPM, data, now)
	if !errors.Is(err, attest.ErrMeasurement) || !strings.Contains(err.Error(), "PCR 0 is") {
		t.Fatalf("another firmware in PCR 0: %v", err)
	}
	if err := judge(t, withPCRs(other, zeroPCRs(0, 7)), attest.ClassTPM, data, now); err != nil {
		t.Fatalf("the second of two accepted chains: %v", err)
	}
	unquoted := zeroPCRs(0, 7)
	unquoted["9"] = strings.Repeat("00", 32)
	if err := judge(t, withPCRs(unquoted), attest.ClassTPM, data, now); !errors.Is(err, attest.ErrMeasurement) || !strings.Contains(err.Error(), "does not cover PCR 9") {
		t.Fatalf("a pinned PCR the quote does not cover: %v", err)
	}
	for name, c := range map[string]struct {
		iso   map[string]any
		field string
		frag  string
	}{
		"pcrs on software": {map[string]any{"class": "software", "platform_keys": []any{key(t, "node").Public().SigningString()}, "pcrs": []any{zeroPCRs(0, 0)}}, "isolates[0].pcrs", "only the tpm class"},
		"runtime PCR":      {map[string]any{"class": "tpm", "platform_keys": []any{ak}, "measurements": []any{runtime}, "pcrs": []any{map[string]any{"23": strings.Repeat("00", 32)}}}, "isolates[0].pcrs[0].23", "0 to 22"},
		"leading zero":     {map[string]any{"class": "tpm", "platform_keys": []any{ak}, "measurements": []any{runtime}, "pcrs": []any{map[string]any{"07": strings.Repeat("00", 32)}}}, "isolates[0].pcrs[0].07", "0 to 22"},
		"SHA-1 value":      {map[string]any{"class": "tpm", "platform_keys": []any{ak}, "measurements": []any{runtime}, "pcrs": []any{map[string]any{"0": strings.Repeat("00", 20)}}}, "isolates[0].pcrs[0].0", "64 lowercase hex"},
		"empty set":        {map[string]any{"class": "tpm", "platform_keys": []any{ak}, "measurements": []any{runtime}, "pcrs": []any{map[string]any{}}}, "isolates[0].pcrs[0]", "accept any quote"},
		"vmpl on tpm":      {map[string]any{"class": "tpm", "platform_keys": []any{ak}, "measurements": []any{runtime}, "max_vmpl": 0}, "isolates[0].max_vmpl", "only the sev-snp class"},
	} {
		doc := psiDoc(t)
		doc["isolates"] = []any{c.iso}
		if ps := problemsOf(t, encode(t, doc)); !hasProblem(ps, c.field, c.frag) {
			t.Errorf("%s: problems %v, want %s: …%s…", name, ps, c.field, c.frag)
		}
	}
}

// TestPolicyRequiresVMPL0: a sev-snp isolate requires VMPL 0 unless it
// says otherwise; the real Milan report was asked for at VMPL 0.
func TestPolicyRequiresVMPL0(t *testing.T) {
	t.Parallel()
	report, err := os.ReadFile("../testdata/conformance/attestation/sev-snp/attestation.bin")
	if err != nil {
		t.Fatal(err)
	}
	vcek, err := os.ReadFile("../testdata/conformance/attestation/sev-snp/vcek.testcer")
	if err != nil {
		t.Fatal(err)
	}
	measurement := "b07af962"
	policyOf := func(iso map[string]any) *Policy {
		doc := psiDoc(t)
		doc["isolates"] = []any{iso}
		return mustParse(t, doc)
	}
	snp := func(extra map[string]any) map[string]any {
		iso := map[string]any{"class": "sev-snp", "measurements": []any{strings.Repeat("00", 48)}, "allow_debug": true}
		for k, v := range extra {
			iso[k] = v
		}
		return iso
	}
	ref, _, err := policyOf(snp(nil)).ReferenceValues(attest.ClassSEVSNP)
	if err != nil || ref.MaxVMPL == nil || *ref.MaxVMPL != 0 {
		t.Fatalf("default reference values: max VMPL %v, %v; want 0", ref.MaxVMPL, err)
	}
	ref, _, _ = policyOf(snp(map[string]any{"max_vmpl": 2})).ReferenceValues(attest.ClassSEVSNP)
	if ref.MaxVMPL == nil || *ref.MaxVMPL != 2 {
		t.Fatalf("max_vmpl 2 gave %v", ref.MaxVMPL)
	}
	doc := psiDoc(t)
	doc["isolates"] = []any{snp(map[string]any{"max_vmpl": 4})}
	if ps := problemsOf(t, encode(t, doc)); !hasProblem(ps, "isolates[0].max_vmpl", "VMPLs 0 to 3") {
		t.Errorf("max_vmpl 4: %v", ps)
	}
	// The real report, judged with its own measurement: VMPL 0 passes.
	ref, opts, _ := policyOf(snp(nil)).ReferenceValues(attest.ClassSEVSNP)
	opts.Now = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	c, err := attest.Verify(context.Background(), &attest.Evidence{Class: attest.ClassSEVSNP, Data: report, Collateral: [][]byte{vcek}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hex.EncodeToString(c.Measurement), measurement) || c.VMPL == nil || *c.VMPL != 0 {
		t.Fatalf("claims: measurement %x vmpl %v", c.Measurement, c.VMPL)
	}
	ref.Measurements = [][]byte{bytes.Clone(c.Measurement)}
	if err := attest.Validate(c, ref, opts.Now); err != nil {
		t.Fatal(err)
	}
	// The same claims asked for at VMPL 1 are refused by the default.
	one := uint32(1)
	c.VMPL = &one
	if err := attest.Validate(c, ref, opts.Now); !errors.Is(err, attest.ErrTCB) || !strings.Contains(err.Error(), "VMPL 1") {
		t.Fatalf("VMPL 1 under the default: %v", err)
	}
}
