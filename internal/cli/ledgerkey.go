package cli

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/verify"
)

func newLedgerKeyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key rotate|show",
		Short: "Rotate a principal's signing key, or follow a key's rotations",
		Long: `A principal (an organisation, a member, a user: whoever signs entries) is
known by the first key it signed with. 'key rotate' appends a key.rotated
entry, signed with the current key and countersigned by the new one; from
its block on the ledger refuses entries signed with the old key and judges
those signed with the new key as the principal's (its memberships, its
artifacts, its grants). Validators rotate by governance ('ledger propose
rotate'); nodes register anew under a new key. See docs/ledger.md.`,
		Example: `  cloister key new --out org-2027.key
  cloister ledger key rotate --ledger "$L" --key org.key --new-key org-2027.key
  cloister ledger key show --ledger "$L" ed25519:AAAA...`,
	}
	cmd.AddCommand(newLedgerKeyRotateCmd(), newLedgerKeyShowCmd())
	return cmd
}

// loadPrincipalKey loads a principal key file for a ledger command.
func loadPrincipalKey(what, file string) (ed25519.PrivateKey, error) {
	k, err := keys.Load(file)
	if err != nil {
		if errors.Is(err, keys.ErrPermissions) {
			return nil, failure(err)
		}
		return nil, usageError("%s: %v", what, err)
	}
	return k.Signer(), nil
}

func newLedgerKeyRotateCmd() *cobra.Command {
	var oldFile, newFile string
	var asJSON bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "rotate --ledger URL --key FILE --new-key FILE",
		Short: "Hand a principal over from its current key to a new one",
		Long: `rotate appends a key.rotated entry signed with the key of --key, naming the
key of --new-key, which signs the rotation statement too (so nobody can
claim a key whose holder did not agree). The new key must never have been
used: not for an entry, not as a node's, member's or another principal's
key. It prints the entry's index once committed.

Exit status: 0 rotated; 1 refused by the ledger (the key was rotated already,
the new key is not fresh, the key is a node's or a validator's) or the
ledger is unreachable; 2 bad usage or unreadable key files.`,
		Example: `  cloister ledger key rotate --ledger http://127.0.0.1:26680 --key org.key --new-key org-2027.key`,
		Args:    cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if oldFile == "" || newFile == "" {
			return usageError("ledger key rotate: --key and --new-key are required")
		}
		c, err := newClient()
		if err != nil {
			return err
		}
		old, err := loadPrincipalKey("ledger key rotate: --key", oldFile)
		if err != nil {
			return err
		}
		next, err := loadPrincipalKey("ledger key rotate: --new-key", newFile)
		if err != nil {
			return err
		}
		se, err := verify.NewEntry(old, ledger.KindKeyRotated, verify.NewKeyRotation(old.Public().(ed25519.PublicKey), next))
		if err != nil {
			return usageError("ledger key rotate: %v", err)
		}
		return appendAndPrint(cmd, "ledger key rotate", c, se, wait, asJSON)
	}
	f := cmd.Flags()
	f.StringVar(&oldFile, "key", "", "principal key file of the current key (signs the rotation)")
	f.StringVar(&newFile, "new-key", "", "principal key file of the new key (countersigns)")
	f.BoolVar(&asJSON, "json", false, `print {"index":N,"height":H,"leaf_hash":"…"}`)
	f.DurationVar(&wait, "wait", 30*time.Second, "how long to wait for the commit")
	return cmd
}

type keyChainJSON struct {
	Principal string            `json:"principal"`
	Current   string            `json:"current"`
	Rotations []keyRotationJSON `json:"rotations"`
	// Checkpoint is the size of the verified checkpoint the chain was
	// checked in.
	Checkpoint uint64 `json:"checkpoint_size"`
}

type keyRotationJSON struct {
	Index uint64 `json:"index"`
	From  string `json:"from"`
	To    string `json:"to"`
}

func newLedgerKeyShowCmd() *cobra.Command {
	var statePath, genesis string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show --ledger URL KEY",
		Short: "Follow a key's principal through its rotations, each checked in the log",
		Long: `show verifies the ledger as 'ledger verify' does (genesis, validator set,
latest checkpoint, consistency with the state file), then follows the chain
of keys of the principal whose key KEY is or was: every key.rotated entry
is fetched with its inclusion proof in the checkpoint and checked — signed
by the key before it, countersigned by the next. It prints the principal
(its first key), each rotation and the current key. A server can withhold a
rotation newer than the checkpoint; it cannot invent one.

Exit status: 0 followed; 1 a step does not verify, or the ledger is
unreachable; 2 bad usage or an untrusted state file.`,
		Example: `  cloister ledger key show --ledger http://127.0.0.1:26680 ed25519:AAAA... --json`,
		Args:    cobra.ExactArgs(1),
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		pub, err := keys.ParseSigningKey(args[0])
		if err != nil {
			return usageError("ledger key show: KEY: %v", err)
		}
		c, err := pinnedClient("ledger key show", newClient, genesis)
		if err != nil {
			return err
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		res, err := c.Verify(ctx, statePath, nil)
		if err != nil {
			return ledgerFailure("ledger key show", c, err)
		}
		kc, err := c.FollowKey(ctx, res.Checkpoint, pub)
		if err != nil {
			return ledgerFailure("ledger key show", c, err)
		}
		out := keyChainJSON{Principal: protocol.FormatEd25519Key(kc.Principal), Current: protocol.FormatEd25519Key(kc.Current),
			Rotations: []keyRotationJSON{}, Checkpoint: res.Checkpoint.Size}
		for _, r := range kc.Rotations {
			out.Rotations = append(out.Rotations, keyRotationJSON{Index: r.Index, From: protocol.FormatEd25519Key(r.From), To: protocol.FormatEd25519Key(r.To)})
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), out)
		}
		w := cmd.OutOrStdout()
		fmt.Fprintf(w, "principal: %s\n", out.Principal)
		for _, r := range out.Rotations {
			fmt.Fprintf(w, "  entry %d: %s -> %s\n", r.Index, r.From, r.To)
		}
		fmt.Fprintf(w, "current:   %s (checked in the checkpoint of size %d)\n", out.Current, out.Checkpoint)
		return nil
	}
	f := cmd.Flags()
	f.StringVar(&statePath, "state", "", "state file of what this client trusts (default: per ledger, in the user config dir)")
	f.StringVar(&genesis, "genesis", "", "the genesis hash to pin (64 hex digits)")
	f.BoolVar(&asJSON, "json", false, "print the chain as JSON")
	return cmd
}
