package cli

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestLedgerGovernanceCommands: on a one-validator testnet, a power
// change proposed by the one validator is decided at once; 'ledger
// members' and 'ledger verify' follow it from the genesis hash; changes
// that do not apply and approvals of decided proposals are refused.
func TestLedgerGovernanceCommands(t *testing.T) {
	home, url := ledgerTestnetHome(t, "")
	members := func(args ...string) membersJSON {
		t.Helper()
		code, out, errOut := runCLI(t, append([]string{"ledger", "members", "--ledger", url, "--json"}, args...)...)
		if code != 0 {
			t.Fatalf("members: exit %d: %s", code, errOut)
		}
		var m membersJSON
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := members()
	if m.SetVersion != 0 || len(m.Validators) != 1 || len(m.GenesisHash) != 64 {
		t.Fatalf("members before: %+v", m)
	}
	hash := m.GenesisHash
	keyFile := filepath.Join(home, "config", "priv_validator_key.json")
	code, out, errOut := runCLI(t, "ledger", "propose", "power", "--ledger", url, "--validator-home", home, "--validator", keyFile, "--power", "2")
	if code != 0 || !strings.Contains(out, "decided: set version 1") {
		t.Fatalf("propose power: exit %d: %s %s", code, out, errOut)
	}
	index := strings.Fields(out)[1]
	index = strings.TrimSuffix(index, ":")
	m = members("--genesis", hash)
	if m.SetVersion != 1 || m.TotalPower != 2 || len(m.Changes) != 1 || m.Changes[0].Change != "power" || m.GenesisHash != hash {
		t.Fatalf("members after: %+v", m)
	}
	if code, _, errOut := runCLI(t, "ledger", "approve", index, "--ledger", url, "--validator-home", home); code != 1 || !strings.Contains(errOut, "decided already") {
		t.Fatalf("approve a decided proposal: exit %d: %s", code, errOut)
	}
	if code, _, errOut := runCLI(t, "ledger", "propose", "remove", "--ledger", url, "--validator-home", home, "--validator", keyFile); code != 1 || !strings.Contains(errOut, "last validator") {
		t.Fatalf("remove the last validator: exit %d: %s", code, errOut)
	}
	state := filepath.Join(t.TempDir(), "state.json")
	if code, out, errOut := runCLI(t, "ledger", "verify", "--ledger", url, "--genesis", hash, "--state", state); code != 0 || !strings.Contains(out, "followed 1 validator set changes") {
		t.Fatalf("verify from the genesis hash: exit %d: %s %s", code, out, errOut)
	}
	if code, _, errOut := runCLI(t, "ledger", "verify", "--ledger", url, "--genesis", strings.Repeat("0", 64), "--state", filepath.Join(t.TempDir(), "s.json")); code != 1 || !strings.Contains(errOut, "genesis") {
		t.Fatalf("verify against another genesis: exit %d: %s", code, errOut)
	}
	for _, args := range [][]string{
		{"ledger", "propose", "add", "--ledger", url},
		{"ledger", "propose", "power", "--ledger", url, "--validator-home", home, "--validator", keyFile},
		{"ledger", "approve", "x", "--ledger", url, "--validator-home", home},
		{"ledger", "members", "--ledger", url, "--genesis", "abc"},
	} {
		if code, _, errOut := runCLI(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2: %s", args, code, errOut)
		}
	}
}
