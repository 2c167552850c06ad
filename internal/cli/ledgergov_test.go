package cli

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// TestLedgerReferenceValuesCommands: on a one-validator testnet (the
// latest rule version), reference values set by one validator's reference.values
// entry are refused with the reason; proposed with 'ledger propose
// reference-values' they are decided at once (the one validator holds all
// the power), and approving them again is refused; the next proposal
// names the values it replaces (rule version 17), read from the ledger.
func TestLedgerReferenceValuesCommands(t *testing.T) {
	home, url := ledgerTestnetHome(t, "")
	m := strings.Repeat("ab", 32)
	code, out, errOut := runCLI(t, "ledger", "propose", "reference-values", "--ledger", url, "--validator-home", home,
		"--class", "software", "--measurement", m, "--min-svn", "runtime=2", "--max-age", "24h")
	if code != 0 || !strings.Contains(out, "reference values for software, 1 measurements, min svn map[runtime:2], max age 24h0m0s") ||
		!strings.Contains(out, "decided: reference values for software in force from height") {
		t.Fatalf("propose reference-values: exit %d: %s %s", code, out, errOut)
	}
	index := strings.TrimSuffix(strings.Fields(out)[1], ":")
	if strings.Contains(out, "replacing") {
		t.Fatalf("the first proposal for a class names values it replaces: %s", out)
	}
	if code, _, errOut := runCLI(t, "ledger", "approve", index, "--ledger", url, "--validator-home", home); code != 1 || !strings.Contains(errOut, "reference values are in force") {
		t.Fatalf("approve decided reference values: exit %d: %s", code, errOut)
	}
	// Rule version 17: the next proposal names the values in force, read
	// from the ledger, and replaces them.
	code, out, errOut = runCLI(t, "ledger", "propose", "reference-values", "--ledger", url, "--validator-home", home,
		"--class", "software", "--measurement", strings.Repeat("cd", 32))
	if code != 0 || !strings.Contains(out, "(set version 0, replacing the values of entry "+index+")") ||
		!strings.Contains(out, "decided: reference values for software in force from height") {
		t.Fatalf("propose reference-values again: exit %d: %s %s", code, out, errOut)
	}
	next := strings.TrimSuffix(strings.Fields(out)[1], ":")
	if code, out, errOut := runCLI(t, "ledger", "approve", next, "--ledger", url, "--validator-home", home); code != 1 ||
		!strings.Contains(out, "replacing the values of entry "+index) || !strings.Contains(errOut, "reference values are in force") {
		t.Fatalf("approve the second proposal: exit %d: %s %s", code, out, errOut)
	}
	keyFile := filepath.Join(t.TempDir(), "k.key")
	if code, _, errOut := runCLI(t, "key", "new", "--out", keyFile); code != 0 {
		t.Fatalf("key new: %s", errOut)
	}
	if code, _, errOut := runCLI(t, "ledger", "append", "--ledger", url, "--key", keyFile, "--kind", "reference.values",
		"--body", `{"class":"software","measurements":["`+m+`"]}`); code != 1 || !strings.Contains(errOut, "one validator cannot set") {
		t.Fatalf("reference.values by one key: exit %d: %s", code, errOut)
	}
	for _, args := range [][]string{
		{"--class", "software"},
		{"--validator-home", home, "--measurement", m},
		{"--validator-home", home, "--class", "software", "--measurement", "xyz"},
		{"--validator-home", home, "--class", "software", "--min-svn", "runtime"},
		{"--validator-home", home, "--class", "software", "--max-age", "soon"},
	} {
		if code, _, errOut := runCLI(t, append([]string{"ledger", "propose", "reference-values", "--ledger", url}, args...)...); code != 2 {
			t.Errorf("%v: exit %d, want 2: %s", args, code, errOut)
		}
	}
}

// TestLedgerWitnessCommand: 'ledger witness' follows a testnet and prints
// its key; 'ledger verify --witness' then accepts the ledger's checkpoint
// only with the witness's cosignature, and refuses a wrong witness key.
func TestLedgerWitnessCommand(t *testing.T) {
	_, url := ledgerTestnetHome(t, "")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "w.key")
	if code, _, errOut := runCLI(t, "key", "new", "--out", keyFile); code != 0 {
		t.Fatalf("key new: %s", errOut)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := &lockedBuffer{}
	cmd := newRoot()
	cmd.SetArgs([]string{"ledger", "witness", "--ledger", url, "--key", keyFile, "--dir", filepath.Join(dir, "w"), "--listen", "127.0.0.1:0", "--interval", "200ms"})
	cmd.SetOut(out)
	cmd.SetErr(out)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("ledger witness did not stop")
		}
	}()
	var vkey, wurl string
	for deadline := time.Now().Add(30 * time.Second); vkey == ""; time.Sleep(50 * time.Millisecond) {
		if f := strings.Fields(out.String()); len(f) >= 4 && f[0] == "witness" {
			vkey, wurl = f[1], f[3]
		}
		if time.Now().After(deadline) {
			t.Fatalf("witness printed %q", out.String())
		}
	}
	state := filepath.Join(dir, "state.json")
	var code int
	var o, errOut string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		code, o, errOut = runCLI(t, "ledger", "verify", "--ledger", url, "--state", state, "--witness", wurl, "--witness-key", vkey)
		if code == 0 || time.Now().After(deadline) {
			break
		}
	}
	if code != 0 || !strings.Contains(o, "cosigned by witness witness-") {
		t.Fatalf("verify with the witness: exit %d: %s %s", code, o, errOut)
	}
	other := strings.Replace(vkey, "witness-", "witnesz-", 1)
	if code, _, errOut := runCLI(t, "ledger", "verify", "--ledger", url, "--state", filepath.Join(dir, "s2.json"), "--witness", wurl, "--witness-key", other); code == 0 {
		t.Fatalf("verify with a wrong witness key succeeded: %s", errOut)
	}
	if code, _, _ := runCLI(t, "ledger", "verify", "--ledger", url, "--witness", wurl); code != 2 {
		t.Fatalf("--witness without --witness-key: exit %d", code)
	}
}
