package cli

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/ledger"
	lclient "github.com/cloisterhq/cloister/ledger/client"
)

// Reference values by governance (rule version 16; from version 17 a
// proposal names the values it replaces): 'ledger propose
// reference-values'; 'ledger approve' takes these proposals as any other
// (docs/ledger.md, "Evidence judged by consensus").

func newLedgerProposeReferenceCmd() *cobra.Command {
	var home, class, maxAge string
	var measurements, minSVN, tcb []string
	cmd := &cobra.Command{
		Use:   ledger.ChangeReferenceValues + " --class C --measurement HEX... --ledger URL --validator-home DIR",
		Short: "Propose: the consortium's reference values for one isolate class",
		Long: `propose reference-values appends a validator.proposed entry proposing the
reference values of isolate class --class, signed with the consensus key of
the validator whose home is --validator-home. Once members holding more
than the genesis threshold of the current set's power signed (the proposer
and 'cloister ledger approve N'), the values replace the class's previous
ones, and from that block on the ledger refuses node.registered and offer
entries whose node's evidence of that class fails them at block time.
From rule version 17 the proposal names the class's values it replaces,
read from the ledger (GET /v1/reference-values/{class}); once other values
are decided for the class, its approvals are refused: propose again.

Exit status: 0 recorded (decided or waiting for approvals); 1 refused by
the ledger (not a validator, a stale set version, the class's values
changed meanwhile, a chain before rule version 16) or the ledger is
unreachable; 2 bad usage.`,
		Example: `  cloister ledger propose reference-values --ledger http://127.0.0.1:26680 --validator-home ./testnet/v0 \
    --class software --measurement 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 --max-age 24h`,
		Args: cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		const what = "ledger propose " + ledger.ChangeReferenceValues
		if home == "" || class == "" {
			return usageError("%s: --validator-home and --class are required", what)
		}
		vk, err := ledger.ValidatorKey(home)
		if err != nil {
			return usageError("%s: %v", what, err)
		}
		v := ledger.ReferenceValues{Class: class, AcceptTCBStatus: tcb}
		for _, m := range measurements {
			if b, err := hex.DecodeString(m); err != nil || len(b) == 0 || len(b) > 64 {
				return usageError("%s: --measurement %q: want 1 to 64 bytes of hex", what, m)
			}
			v.Measurements = append(v.Measurements, strings.ToLower(m))
		}
		for _, s := range minSVN {
			comp, n, ok := strings.Cut(s, "=")
			svn, err := strconv.ParseUint(n, 10, 64)
			if !ok || comp == "" || err != nil {
				return usageError("%s: --min-svn %q: want COMPONENT=N", what, s)
			}
			if v.MinSVN == nil {
				v.MinSVN = map[string]uint64{}
			}
			v.MinSVN[comp] = svn
		}
		if maxAge != "" {
			d, err := time.ParseDuration(maxAge)
			if err != nil || d < time.Second {
				return usageError("%s: --max-age %q: want a duration of at least 1s", what, maxAge)
			}
			v.MaxAgeSeconds = uint64(d / time.Second)
		}
		p := ledger.ReferenceProposal{Change: ledger.ChangeReferenceValues, Values: v}
		c, err := newClient()
		if err != nil {
			return err
		}
		if p.Replaces, err = replacedValues(cmd, c, class); err != nil {
			return ledgerFailure(what, c, err)
		}
		c, index, err := appendProposal(cmd, func() (*lclient.Client, error) { return c, nil }, what, vk, func(set uint64) any { p.Set = set; return p })
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "proposal %d: reference values for %s, %s (set version %d%s)\n", index, class, describeReference(&v), p.Set, describeReplaces(p.Replaces))
		return reportReference(cmd, c, index, class)
	}
	f := cmd.Flags()
	f.StringVar(&home, "validator-home", "", "home of a current validator (its consensus key signs the proposal)")
	f.StringVar(&class, "class", "", "the isolate class (software, tpm, sev-snp, tdx, nitro, …)")
	f.StringArrayVar(&measurements, "measurement", nil, "an accepted measurement, hex (repeat for several)")
	f.StringArrayVar(&minSVN, "min-svn", nil, "a minimum security version, COMPONENT=N (repeat for several)")
	f.StringArrayVar(&tcb, "accept-tcb-status", nil, "a TCB status to accept besides up to date (repeat for several)")
	f.StringVar(&maxAge, "max-age", "", "the oldest evidence accepted, judged at block time (e.g. 24h)")
	return cmd
}

// replacedValues is what a proposal for class names as the values it
// replaces (rule version 17): the entry that put the class's values in
// force, nil when it has none or the ledger judges by an earlier version
// (which refuses the member).
func replacedValues(cmd *cobra.Command, c *lclient.Client, class string) (*uint64, error) {
	ctx, stop := signalContext(cmd)
	defer stop()
	st, err := c.Status(ctx)
	if err != nil || st.RulesVersion < ledger.RulesV17 {
		return nil, err
	}
	rv, err := c.ReferenceValues(ctx, class)
	if errors.Is(err, lclient.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &rv.Index, nil
}

// describeReplaces says which values a proposal replaces, when it names them.
func describeReplaces(replaces *uint64) string {
	if replaces == nil {
		return ""
	}
	return fmt.Sprintf(", replacing the values of entry %d", *replaces)
}

func describeReference(v *ledger.ReferenceValues) string {
	parts := []string{fmt.Sprintf("%d measurements", len(v.Measurements))}
	if len(v.MinSVN) > 0 {
		parts = append(parts, fmt.Sprintf("min svn %v", v.MinSVN))
	}
	if len(v.AcceptTCBStatus) > 0 {
		parts = append(parts, "tcb "+strings.Join(v.AcceptTCBStatus, ","))
	}
	if v.MaxAgeSeconds > 0 {
		parts = append(parts, "max age "+(time.Duration(v.MaxAgeSeconds)*time.Second).String())
	}
	return strings.Join(parts, ", ")
}

// reportReference says whether proposal index put class's values in force.
func reportReference(cmd *cobra.Command, c *lclient.Client, index uint64, class string) error {
	rv, err := c.ReferenceValues(cmd.Context(), class)
	if err != nil && !errors.Is(err, lclient.ErrNotFound) {
		return ledgerFailure("ledger reference values", c, err)
	}
	if err == nil && rv.Index == index {
		fmt.Fprintf(cmd.OutOrStdout(), "decided: reference values for %s in force from height %d\n", class, rv.Height)
		return nil
	}
	fmt.Fprintln(cmd.OutOrStdout(), "waiting for approvals: cloister ledger approve", index)
	return nil
}
