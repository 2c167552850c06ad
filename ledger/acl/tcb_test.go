package acl_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/attest"
	_ "github.com/cloisterhq/cloister/attest/sevsnp"
	"github.com/cloisterhq/cloister/internal/corpus"
	"github.com/cloisterhq/cloister/ledger/acl"
)

// TestTCBFloorOnRealClaims judges a delegation's floor against the
// security versions verified from a real SEV-SNP report (bootloader 2,
// TEE 0, SNP 5, microcode 0x44; a debug guest, let through here only to
// read its claims).
func TestTCBFloorOnRealClaims(t *testing.T) {
	ev := &attest.Evidence{Class: attest.ClassSEVSNP, Data: corpus.Read(t, "attestation/sev-snp/attestation.bin"),
		Collateral: [][]byte{corpus.Read(t, "attestation/sev-snp/vcek.testcer"), corpus.Read(t, "attestation/sev-snp/ask_ark_milan.pem")}}
	c, err := attest.Verify(context.Background(), ev, attest.VerifyOptions{Now: time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC), AllowDebug: true})
	if err != nil {
		t.Fatal(err)
	}
	l := acl.Limits{MinTCB: map[string]map[string]uint64{"sev-snp": {"snp": 5, "microcode": 0x44}, "tdx": {"tee_tcb_svn0": 3}}}
	if err := l.CheckTCB(string(c.Class), c.SVN); err != nil {
		t.Fatalf("at the floor: %v", err)
	}
	for floor, want := range map[string]string{
		"snp":        `TCB component "snp" of the isolate's sev-snp evidence is 5, below the delegation's minimum 6`,
		"bootloader": `TCB component "bootloader" of the isolate's sev-snp evidence is 2, below the delegation's minimum 3`,
	} {
		l.MinTCB["sev-snp"][floor] = c.SVN[floor] + 1
		err := l.CheckTCB(string(c.Class), c.SVN)
		if !errors.Is(err, acl.ErrExceeds) || !strings.Contains(err.Error(), want) {
			t.Errorf("floor %s above the evidence: %v", floor, err)
		}
		l.MinTCB["sev-snp"][floor] = c.SVN[floor]
	}
	l.MinTCB["sev-snp"]["tee_tcb_svn0"] = 0
	if err := l.CheckTCB(string(c.Class), c.SVN); err == nil || !strings.Contains(err.Error(), "reports no such component") {
		t.Errorf("a component SEV-SNP evidence lacks: %v", err)
	}
	if err := l.CheckTCB("software", nil); err != nil {
		t.Errorf("a class without a floor: %v", err)
	}
}
