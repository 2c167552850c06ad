package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// newLedgerRulesCmd is 'ledger rules': the ledger's versioned acceptance
// rules.
func newLedgerRulesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rules",
		Short: "Show the ledger's rule versions, or schedule a later one",
		Long: `What validators accept is versioned: each change turns on at a block
height, and older blocks stay judged by the rules they were judged by. A new
chain starts with the latest version; a later one is scheduled by
rules.scheduled entries, one per validator, and takes effect once validators
holding more than 2/3 of the voting power asked for the same version from
the same height. See docs/ledger.md ("Rule versions").`,
		Example: `  cloister ledger rules show --ledger http://127.0.0.1:26680
  cloister ledger rules schedule --ledger http://127.0.0.1:26680 --validator-home ./net/v0 --version 2 --height 1200`,
	}
	cmd.AddCommand(newLedgerRulesShowCmd(), newLedgerRulesScheduleCmd())
	return cmd
}

// rulesJSON is "ledger rules show --json".
type rulesJSON struct {
	Height  int64             `json:"height"`
	Version int               `json:"version"`
	Latest  int               `json:"latest_known"`
	Steps   []client.RuleStep `json:"rules"`
}

func newLedgerRulesShowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show --ledger URL",
		Short: "Show the rule version in force and the schedule",
		Long: `show prints the rule version that judges the ledger's next block and every
step of the schedule (from which height each version is in force), as the
server reports them (not verified: the schedule is state, not a proved
entry; ask your own organisation's validator).

Exit status: 0 shown; 1 the ledger is unreachable; 2 bad usage.`,
		Example: `  cloister ledger rules show --ledger http://127.0.0.1:26680 --json`,
		Args:    cobra.NoArgs,
	}
	read := func(c *client.Client, ctx context.Context) (rulesJSON, error) {
		st, err := c.Status(ctx)
		if err != nil {
			return rulesJSON{}, err
		}
		out := rulesJSON{Height: st.Height, Version: st.RulesVersion, Latest: ledger.LatestRules, Steps: st.Rules}
		if out.Version == 0 {
			out.Version, out.Steps = ledger.RulesV1, []client.RuleStep{{Height: 1, Version: ledger.RulesV1}}
		}
		return out, nil
	}
	ledgerListing(cmd, "ledger rules show", `print {"height","version","latest_known","rules":[{"height","version"}]}`, read, func(w io.Writer, out rulesJSON) error {
		fmt.Fprintf(w, "rule version %d judges block %d (this binary knows versions up to %d)\n", out.Version, out.Height+1, out.Latest)
		for _, s := range out.Steps {
			fmt.Fprintf(w, "  version %d from height %d\n", s.Version, s.Height)
		}
		return nil
	})
	return cmd
}

func newLedgerRulesScheduleCmd() *cobra.Command {
	var home string
	var version, height int64
	cmd := &cobra.Command{
		Use:   "schedule --ledger URL --validator-home DIR --version N --height H",
		Short: "Ask, as one validator, for rule version N from block height H",
		Long: `schedule appends a rules.scheduled entry signed with the consensus key of the
validator whose home is --validator-home, and prints its index. The version
turns on at --height once validators holding more than 2/3 of the voting
power have each appended the same request; until then nothing changes.
--height must lie at least two blocks after the block that carries the
entry, and --version must be later than the last one scheduled and known to
the validators (upgrade their binaries first).

Exit status: 0 recorded; 1 refused by the ledger (not a validator's key,
a version already scheduled, a height too soon) or the ledger is
unreachable; 2 bad usage.`,
		Example: `  cloister ledger rules schedule --ledger http://127.0.0.1:26680 --validator-home ./net/v0 --version 2 --height 1200`,
		Args:    cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if home == "" || version < 1 || height < 1 {
			return usageError("ledger rules schedule: --validator-home, --version and --height are required")
		}
		c, err := newClient()
		if err != nil {
			return err
		}
		vk, err := ledger.ValidatorKey(home)
		if err != nil {
			return usageError("ledger rules schedule: %v", err)
		}
		se, err := verify.NewEntry(vk, ledger.KindRulesScheduled, map[string]int64{"version": version, "height": height})
		if err != nil {
			return usageError("ledger rules schedule: %v", err)
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		rc, err := c.Append(ctx, se)
		if err != nil {
			return ledgerFailure("ledger rules schedule", c, err)
		}
		fmt.Fprintln(cmd.OutOrStdout(), rc.Index)
		return nil
	}
	f := cmd.Flags()
	f.StringVar(&home, "validator-home", "", "home of a validator of the chain (its consensus key signs the entry)")
	f.Int64Var(&version, "version", 0, "the rule version to turn on")
	f.Int64Var(&height, "height", 0, "the first block height judged by it")
	return cmd
}
