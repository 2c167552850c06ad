package cli

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestLedgerRulesCommands: a new chain runs the latest rule version from
// height 1, and a validator's request for a version it cannot have is
// refused by the ledger with the reason.
func TestLedgerRulesCommands(t *testing.T) {
	home, url := ledgerTestnetHome(t, "cli-rules")
	code, out, errOut := runCLI(t, "ledger", "rules", "show", "--ledger", url, "--json")
	if code != 0 {
		t.Fatalf("rules show: exit %d: %s", code, errOut)
	}
	var got rulesJSON
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if got.Version != 2 || len(got.Steps) != 1 || got.Steps[0].Height != 1 || got.Steps[0].Version != 2 || got.Latest != 2 {
		t.Fatalf("rules show: %+v, want version 2 from height 1", got)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--version", "2", "--height", "1000"}, 1, "not later than version 2"},
		{[]string{"--version", "3", "--height", "1000"}, 1, "not one this validator implements"},
		{[]string{"--version", "3"}, 2, "required"},
	} {
		args := append([]string{"ledger", "rules", "schedule", "--ledger", url, "--validator-home", home}, c.args...)
		code, _, errOut := runCLI(t, args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("rules schedule %v: exit %d %q, want %d and %q", c.args, code, errOut, c.code, c.want)
		}
	}
	code, _, errOut = runCLI(t, "ledger", "rules", "schedule", "--ledger", url, "--version", "3", "--height", "9")
	if code != 2 {
		t.Errorf("schedule without --validator-home: exit %d %s", code, errOut)
	}
}
