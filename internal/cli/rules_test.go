package cli

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/ledger"
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
	if got.Version != ledger.LatestRules || len(got.Steps) != 1 || got.Steps[0].Height != 1 || got.Steps[0].Version != ledger.LatestRules || got.Latest != ledger.LatestRules {
		t.Fatalf("rules show: %+v, want version %d from height 1", got, ledger.LatestRules)
	}
	latest, next := strconv.Itoa(ledger.LatestRules), strconv.Itoa(ledger.LatestRules+1)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--version", latest, "--height", "1000"}, 1, "not later than version " + latest},
		{[]string{"--version", next, "--height", "1000"}, 1, "not one this validator implements"},
		{[]string{"--version", next}, 2, "required"},
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
