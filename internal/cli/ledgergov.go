package cli

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Membership by governance: 'ledger propose', 'ledger approve' and
// 'ledger members' (docs/ledger.md, "Changing the validator set").

func newLedgerProposeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "propose add|remove|power|rotate|reference-values",
		Short: "Propose a change to the validator set or the reference values (a current validator signs)",
		Long: `propose appends a validator.proposed entry signed with the consensus key of
the validator whose home is --validator-home, and prints the proposal's
index. The proposer's signature counts as its approval; other validators
approve with 'cloister ledger approve N'. The change is decided in the block
where the proposer and approvers hold more than the genesis threshold of
the current set's power (more than 2/3 unless the genesis says otherwise),
and the new set signs from two blocks later.

  add     --validator KEY [--power N]   a new validator (power 1 by default)
  remove  --validator KEY               a validator leaves
  power   --validator KEY --power N     a validator's power changes
  rotate  --new-key KEY                 the proposer's own key moves to KEY;
                                        restart its node with the new key
                                        file once the change is in force
  reference-values --class C --measurement HEX...
                                        the consortium's reference values for
                                        isolate class C (rule version 16; in
                                        force at once once decided; from
                                        version 17 naming the values in
                                        force it replaces)

KEY is "ed25519:<base64>" or the path of a CometBFT priv_validator_key.json.

Exit status: 0 recorded (decided or waiting for approvals); 1 refused by
the ledger (not a validator, a change that does not apply, a stale set
version) or the ledger is unreachable; 2 bad usage.`,
		Example: `  cloister ledger propose add --ledger http://127.0.0.1:26680 --validator-home ./testnet/v0 --validator ./new/config/priv_validator_key.json
  cloister ledger propose remove --ledger "$L" --validator-home ./testnet/v0 --validator ed25519:AAAA...
  cloister ledger propose rotate --ledger "$L" --validator-home ./testnet/v2 --new-key ./v2-next/priv_validator_key.json`,
	}
	for _, change := range []string{verify.ChangeAdd, verify.ChangeRemove, verify.ChangePower, verify.ChangeRotate} {
		cmd.AddCommand(newLedgerProposeChangeCmd(change))
	}
	cmd.AddCommand(newLedgerProposeReferenceCmd())
	return cmd
}

// validatorKeyArg reads a validator key given as ed25519:... or as a key file.
func validatorKeyArg(s string) (string, error) {
	if strings.HasPrefix(s, protocol.Ed25519KeyPrefix) {
		pub, err := keys.ParseSigningKey(s)
		if err != nil {
			return "", err
		}
		return protocol.FormatEd25519Key(pub), nil
	}
	pub, err := ledger.ReadValidatorPublicKey(s)
	if err != nil {
		return "", err
	}
	return protocol.FormatEd25519Key(pub), nil
}

func newLedgerProposeChangeCmd(change string) *cobra.Command {
	var home, validator, newKey string
	var power int64
	use := map[string]string{
		verify.ChangeAdd: "add --validator KEY [--power N]", verify.ChangeRemove: "remove --validator KEY",
		verify.ChangePower: "power --validator KEY --power N", verify.ChangeRotate: "rotate --new-key KEY",
	}[change]
	cmd := &cobra.Command{
		Use:     use + " --ledger URL --validator-home DIR",
		Short:   "Propose: " + change,
		Example: "  cloister ledger propose " + use + " --ledger http://127.0.0.1:26680 --validator-home ./testnet/v0",
		Args:    cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		what := "ledger propose " + change
		if home == "" {
			return usageError("%s: --validator-home is required", what)
		}
		vk, err := ledger.ValidatorKey(home)
		if err != nil {
			return usageError("%s: %v", what, err)
		}
		self := protocol.FormatEd25519Key(vk.Public().(ed25519.PublicKey))
		p := verify.ValidatorProposal{Change: change}
		switch change {
		case verify.ChangeRotate:
			if newKey == "" || validator != "" {
				return usageError("%s: give --new-key (a rotation moves the proposer's own key)", what)
			}
			if p.NewKey, err = validatorKeyArg(newKey); err != nil {
				return usageError("%s: --new-key: %v", what, err)
			}
			p.Validator = self
		default:
			if validator == "" {
				return usageError("%s: --validator is required", what)
			}
			if p.Validator, err = validatorKeyArg(validator); err != nil {
				return usageError("%s: --validator: %v", what, err)
			}
		}
		switch change {
		case verify.ChangeAdd:
			p.Power = max(power, 1)
		case verify.ChangePower:
			if power < 1 {
				return usageError("%s: --power N (at least 1) is required", what)
			}
			p.Power = power
		}
		c, index, err := appendProposal(cmd, newClient, what, vk, func(set uint64) any { p.Set = set; return p })
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "proposal %d: %s %s (set version %d)\n", index, change, describeChange(&p), p.Set)
		return reportDecision(cmd, c, index, p.Set)
	}
	f := cmd.Flags()
	f.StringVar(&home, "validator-home", "", "home of a current validator (its consensus key signs the proposal)")
	if change != verify.ChangeRotate {
		f.StringVar(&validator, "validator", "", `the validator's key: "ed25519:..." or a priv_validator_key.json`)
	} else {
		f.StringVar(&newKey, "new-key", "", `the new key: "ed25519:..." or a priv_validator_key.json`)
	}
	if change == verify.ChangeAdd || change == verify.ChangePower {
		f.Int64Var(&power, "power", 0, "voting power (add: default 1)")
	}
	return cmd
}

// appendProposal appends a validator.proposed entry signed with vk, its
// body made for the ledger's current set version, and returns the
// proposal's index.
func appendProposal(cmd *cobra.Command, newClient func() (*lclient.Client, error), what string, vk ed25519.PrivateKey, body func(set uint64) any) (*lclient.Client, uint64, error) {
	c, err := newClient()
	if err != nil {
		return nil, 0, err
	}
	ctx, stop := signalContext(cmd)
	defer stop()
	cur, _, err := c.ValidatorChanges(ctx, 1<<62)
	if err != nil {
		return nil, 0, ledgerFailure(what, c, err)
	}
	se, err := verify.NewEntry(vk, verify.KindValidatorProposed, body(cur))
	if err != nil {
		return nil, 0, usageError("%s: %v", what, err)
	}
	rc, err := c.Append(ctx, se)
	if err != nil {
		return nil, 0, ledgerFailure(what, c, err)
	}
	return c, rc.Index, nil
}

func describeChange(p *verify.ValidatorProposal) string {
	switch p.Change {
	case verify.ChangeRotate:
		return p.Validator + " -> " + p.NewKey
	case verify.ChangeAdd, verify.ChangePower:
		return fmt.Sprintf("%s power %d", p.Validator, p.Power)
	}
	return p.Validator
}

// reportDecision says whether proposal index made set version set+1.
func reportDecision(cmd *cobra.Command, c *lclient.Client, index, set uint64) error {
	_, changes, err := c.ValidatorChanges(cmd.Context(), set+1)
	if err != nil {
		return ledgerFailure("ledger validator changes", c, err)
	}
	for _, ch := range changes {
		if ch.ProposalIndex == index {
			fmt.Fprintf(cmd.OutOrStdout(), "decided: set version %d at height %d, in force from height %d\n", ch.Version, ch.Height, ch.Effective)
			return nil
		}
	}
	fmt.Fprintln(cmd.OutOrStdout(), "waiting for approvals: cloister ledger approve", index)
	return nil
}

func newLedgerApproveCmd() *cobra.Command {
	var home string
	cmd := &cobra.Command{
		Use:   "approve N --ledger URL --validator-home DIR",
		Short: "Approve proposal N: a validator-set change or reference values (a current validator signs)",
		Long: `approve fetches proposal N from the ledger, prints the change it proposes,
and appends a validator.approved entry naming N and the leaf hash of the
proposal's bytes as received (so the approval holds for exactly that
proposal), signed with the consensus key of the validator whose home is
--validator-home. It prints whether the change is now decided. Proposed
reference values ('propose reference-values') are approved the same way.

Exit status: 0 approved; 1 refused by the ledger (not a validator, already
approved or decided, the set changed since the proposal, from rule version
17 other reference values decided for the class since) or the ledger is
unreachable; 2 bad usage or N is not a proposal.`,
		Example: `  cloister ledger approve 42 --ledger http://127.0.0.1:26681 --validator-home ./testnet/v1`,
		Args:    cobra.ExactArgs(1),
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if home == "" {
			return usageError("ledger approve: --validator-home is required")
		}
		vk, err := ledger.ValidatorKey(home)
		if err != nil {
			return usageError("ledger approve: %v", err)
		}
		c, index, err := clientAndIndex(cmd, newClient, args[0])
		if err != nil {
			return err
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		e, err := c.Get(ctx, index)
		if err != nil {
			return ledgerFailure("ledger approve", c, err)
		}
		rp, isRef, err := ledger.ParseReferenceProposal(e.Signed)
		var p *verify.ValidatorProposal
		if !isRef {
			p, err = verify.ParseValidatorProposal(e.Signed)
		}
		if err != nil {
			return usageError("ledger approve: entry %d is not a proposal: %v", index, err)
		}
		if err := e.Signed.VerifySignature(); err != nil {
			return failure(fmt.Errorf("ledger approve: entry %d: %v", index, err))
		}
		leaf := verify.LeafHash(e.Tx)
		se, err := verify.NewEntry(vk, verify.KindValidatorApproved, verify.ValidatorApproval{Proposal: index, Hash: hex.EncodeToString(leaf[:])})
		if err != nil {
			return usageError("ledger approve: %v", err)
		}
		if isRef {
			fmt.Fprintf(cmd.OutOrStdout(), "proposal %d by %s: reference values for %s, %s (set version %d%s)\n", index, e.Signed.Entry.Submitter, rp.Values.Class, describeReference(&rp.Values), rp.Set, describeReplaces(rp.Replaces))
		} else {
			fmt.Fprintf(cmd.OutOrStdout(), "proposal %d by %s: %s %s (set version %d)\n", index, e.Signed.Entry.Submitter, p.Change, describeChange(p), p.Set)
		}
		rc, err := c.Append(ctx, se)
		if err != nil {
			return ledgerFailure("ledger approve", c, err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "approval %d recorded\n", rc.Index)
		if isRef {
			return reportReference(cmd, c, index, rp.Values.Class)
		}
		return reportDecision(cmd, c, index, p.Set)
	}
	cmd.Flags().StringVar(&home, "validator-home", "", "home of a current validator (its consensus key signs the approval)")
	return cmd
}

// membersJSON is 'ledger members --json'.
type membersJSON struct {
	ChainID     string             `json:"chain_id"`
	GenesisHash string             `json:"genesis_hash"`
	Threshold   verify.Threshold   `json:"threshold"`
	SetVersion  uint64             `json:"set_version"`
	TotalPower  int64              `json:"total_power"`
	Validators  []verify.Validator `json:"validators"`
	Changes     []memberChangeJSON `json:"changes"`
}

type memberChangeJSON struct {
	Version   uint64 `json:"version"`
	Change    string `json:"change"`
	Validator string `json:"validator"`
	NewKey    string `json:"new_key,omitempty"`
	Power     int64  `json:"power,omitempty"`
	Height    int64  `json:"height"`
	Effective int64  `json:"effective"`
	Approvals int    `json:"approvals"`
}

func newLedgerMembersCmd() *cobra.Command {
	var genesis string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "members --ledger URL [--genesis HASH] [--json]",
		Short: "Show the validator set, followed from the genesis through every approved change",
		Long: `members fetches the ledger's genesis and every validator-set change, checks
each change against the set before it (proposal and approvals signed by
members holding more than the threshold of its power), and prints the set
they make. With --genesis HASH the genesis must have that hash (as
'cloister ledger members' prints it for the operators who made the chain);
without it, the genesis is taken as shown.

Exit status: 0 followed; 1 a change does not follow, the genesis is not
HASH, or the ledger is unreachable; 2 bad usage.`,
		Example: `  cloister ledger members --ledger http://127.0.0.1:26680
  cloister ledger members --ledger "$L" --genesis 3f5a... --json`,
		Args: cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := pinnedClient("ledger members", newClient, genesis)
		if err != nil {
			return err
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		m, err := c.FollowGenesis(ctx, genesis)
		if err != nil {
			return ledgerFailure("ledger members", c, err)
		}
		out := membersJSON{ChainID: m.Genesis.ChainID, GenesisHash: m.Genesis.Hash(), Threshold: m.Genesis.Threshold,
			SetVersion: m.Version, TotalPower: m.Set.TotalPower(), Validators: m.Set.Validators, Changes: []memberChangeJSON{}}
		for _, ch := range m.Changes {
			se, _ := verify.DecodeEntry(ch.Proposal) // Follow decoded it already
			p, _ := verify.ParseValidatorProposal(se)
			out.Changes = append(out.Changes, memberChangeJSON{Version: ch.Version, Change: p.Change, Validator: p.Validator,
				NewKey: p.NewKey, Power: p.Power, Height: ch.Height, Effective: ch.Effective, Approvals: len(ch.Approvals) + 1})
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), out)
		}
		w := cmd.OutOrStdout()
		fmt.Fprintf(w, "ledger %s, genesis %s\n", out.ChainID, out.GenesisHash)
		fmt.Fprintf(w, "set version %d (%d changes followed from genesis, each approved by %s of the power)\n", out.SetVersion, len(out.Changes), out.Threshold)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ADDRESS\tPOWER\tKEY")
		for _, v := range out.Validators {
			pub, _ := v.PublicKey()
			fmt.Fprintf(tw, "%s\t%d\t%s\n", v.Address, v.Power, protocol.FormatEd25519Key(pub))
		}
		tw.Flush()
		for _, ch := range out.Changes {
			fmt.Fprintf(w, "change %d: %s %s, decided at height %d, in force from %d (%d signers)\n", ch.Version, ch.Change,
				describeChange(&verify.ValidatorProposal{Change: ch.Change, Validator: ch.Validator, NewKey: ch.NewKey, Power: ch.Power}), ch.Height, ch.Effective, ch.Approvals)
		}
		return nil
	}
	cmd.Flags().StringVar(&genesis, "genesis", "", "the genesis hash to require (64 hex digits)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the followed set as JSON")
	return cmd
}

// pinnedClient is the --ledger client, held to the genesis hash given
// with --genesis (if any).
func pinnedClient(what string, newClient func() (*lclient.Client, error), genesis string) (*lclient.Client, error) {
	if err := checkGenesisHash(genesis); err != nil {
		return nil, usageError("%s: --genesis: %v", what, err)
	}
	c, err := newClient()
	if err != nil || genesis == "" {
		return c, err
	}
	if c, err = lclient.New(c.URL(), lclient.WithGenesis(genesis)); err != nil {
		return nil, usageError("%s: %v", what, err)
	}
	return c, nil
}

func checkGenesisHash(s string) error {
	if s == "" {
		return nil
	}
	if b, err := hex.DecodeString(s); err != nil || len(b) != 32 || hex.EncodeToString(b) != s {
		return fmt.Errorf("%q: want 64 lower-case hex digits", s)
	}
	return nil
}
