package cli

import (
	"fmt"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/verify"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
)

// newLedgerMemberCmd is 'ledger member': consortium membership entries.
func newLedgerMemberCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "member",
		Short: "Admit or remove consortium members, or show a key's membership",
		Long: `A consortium member is a key that a member.admitted entry names and no later
member.removed entry has removed. Nodes in consortium admission mode let
members create sessions (cloister node --admission consortium). For now a
validator of the chain admits and removes members, signing with its
consensus key (HOME/config/priv_validator_key.json; for a node's embedded
ledger, DATA/ledger). See docs/ledger.md.`,
		Example: `  cloister ledger member admit --ledger http://127.0.0.1:7480 --validator-home ./node-data/ledger --member ed25519:AAAA... --name org-a
  cloister ledger member show --ledger http://127.0.0.1:7480 --member ed25519:AAAA...`,
	}
	cmd.AddCommand(newLedgerMemberChangeCmd(true), newLedgerMemberChangeCmd(false), newLedgerMemberShowCmd())
	return cmd
}

func newLedgerMemberChangeCmd(admit bool) *cobra.Command {
	var home, member, name string
	verb, kind := "remove", ledger.KindMemberRemoved
	if admit {
		verb, kind = "admit", ledger.KindMemberAdmitted
	}
	cmd := &cobra.Command{
		Use:   verb + " --ledger URL --validator-home DIR --member KEY",
		Short: map[bool]string{true: "Make a key a consortium member", false: "End a key's consortium membership"}[admit],
		Long: fmt.Sprintf(`%s appends a %s entry signed with the consensus key of the validator
whose home is --validator-home, and prints its index.

Exit status: 0 recorded; 1 refused by the ledger (not a validator's key, the
key is already in that state) or the ledger is unreachable; 2 bad usage.`, verb, kind),
		Example: fmt.Sprintf(`  cloister ledger member %s --ledger http://127.0.0.1:7480 --validator-home ./node-data/ledger --member ed25519:AAAA...`, verb),
		Args:    cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if home == "" || member == "" {
			return usageError("ledger member %s: --validator-home and --member are required", verb)
		}
		pub, err := keys.ParseSigningKey(member)
		if err != nil {
			return usageError("ledger member %s: --member: %v", verb, err)
		}
		c, err := newClient()
		if err != nil {
			return err
		}
		vk, err := ledger.ValidatorKey(home)
		if err != nil {
			return usageError("ledger member %s: %v", verb, err)
		}
		body := map[string]any{"member": protocol.FormatEd25519Key(pub)}
		if admit && name != "" {
			body["name"] = name
		}
		se, err := verify.NewEntry(vk, kind, body)
		if err != nil {
			return usageError("ledger member %s: %v", verb, err)
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		rc, err := c.Append(ctx, se)
		if err != nil {
			return ledgerFailure("ledger member "+verb, c, err)
		}
		fmt.Fprintln(cmd.OutOrStdout(), rc.Index)
		return nil
	}
	f := cmd.Flags()
	f.StringVar(&home, "validator-home", "", "home of a validator of the chain (its consensus key signs the entry)")
	f.StringVar(&member, "member", "", "the member's public signing key, ed25519:...")
	if admit {
		f.StringVar(&name, "name", "", "the member's name, for people (at most 64 bytes)")
	}
	return cmd
}

func newLedgerMemberShowCmd() *cobra.Command {
	var member string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show --ledger URL --member KEY",
		Short: "Show a key's consortium membership",
		Long: `show asks the ledger whether --member is a consortium member: the index of
the entry that admitted it and of the one that removed it, if any. The
answer is the server's reading of its state (entries are proved, the state
they build is not): ask your own organisation's validator.

Exit status: 0 a member now; 1 not a member (never admitted, or removed) or
the ledger is unreachable; 2 bad usage.`,
		Example: `  cloister ledger member show --ledger http://127.0.0.1:7480 --member ed25519:AAAA... --json`,
		Args:    cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		pub, err := keys.ParseSigningKey(member)
		if err != nil {
			return usageError("ledger member show: --member: %v", err)
		}
		c, err := newClient()
		if err != nil {
			return err
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		m, err := c.Member(ctx, pub)
		if err != nil {
			return ledgerFailure("ledger member show", c, err)
		}
		if asJSON {
			if err := printJSON(cmd.OutOrStdout(), m); err != nil {
				return err
			}
		} else if m.Removed != 0 {
			fmt.Fprintf(cmd.OutOrStdout(), "%s: admitted at entry %d, removed at entry %d\n", m.Key, m.Admitted, m.Removed)
		} else {
			fmt.Fprintf(cmd.OutOrStdout(), "%s: member since entry %d %s\n", m.Key, m.Admitted, m.Name)
		}
		if m.Removed != 0 {
			return failure(fmt.Errorf("ledger member show: %s is not a member (removed at entry %d)", m.Key, m.Removed))
		}
		return nil
	}
	cmd.Flags().StringVar(&member, "member", "", "the public signing key, ed25519:...")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"member":...,"name":...,"admitted":N,"removed":N}`)
	return cmd
}
