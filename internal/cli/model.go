package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/model"
)

func newModelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "model",
		Short: "Federation's computation models on the ledger: list, revoke",
		Long: `An organisation publishes a computation model on the ledger: the program's
SHA-256 (the program stays with the organisation's nodes), the functions it
exports with a JSON Schema for each one's parameters and result, the local
datasets they read (names and schemas, never contents), its output rules,
who may call it and the nodes that serve it (docs/federation.md).`,
		Example: `  cloister model list --ledger http://127.0.0.1:26680`,
	}
	cmd.AddCommand(newModelListCmd(), newModelRevokeCmd())
	return cmd
}

func newModelListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list --ledger URL [--json]",
		Short: "List the published models, their current version, functions and serving nodes",
		Long: `list prints every model published on the ledger: its name, current version,
owner organisation, functions, the nodes that serve it (with their
endpoints), its output rule and whether that version is revoked. Each
model.published entry is checked here (signature, submitter, body) before
it is shown.

Exit status: 0 listed; 1 the ledger could not be read; 2 bad usage.`,
		Example: `  cloister model list --ledger http://127.0.0.1:26680 --json`,
		Args:    cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := newClient()
		if err != nil {
			return err
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		l, err := c.Models(ctx)
		if err != nil {
			return ledgerFailure("model list", c, err)
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), l)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "MODEL\tVERSION\tSTATE\tFUNCTIONS\tMIN ROWS\tCALLS\tNODES")
		for _, m := range l.Models {
			fns := make([]string, len(m.Functions))
			for i, f := range m.Functions {
				fns[i] = f.Name
			}
			nodes := make([]string, len(m.Nodes))
			for i, n := range m.Nodes {
				nodes[i] = short(n) + "@" + orDash(m.Endpoints[i])
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%s\n", m.Name, m.Version, modelState(&m), strings.Join(fns, ","),
				m.Output.MinRows, m.Calls, strings.Join(nodes, " "))
		}
		return tw.Flush()
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the list as JSON")
	return cmd
}

func modelState(m *client.PublishedModel) string {
	if m.Revoked != 0 {
		return fmt.Sprintf("revoked@%d", m.Revoked)
	}
	return "live"
}

func short(key string) string {
	k := strings.TrimPrefix(key, protocol.Ed25519KeyPrefix)
	if len(k) > 10 {
		k = k[:10] + "…"
	}
	return k
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newModelRevokeCmd() *cobra.Command {
	var keyFile, reason string
	var version uint64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "revoke --ledger URL --key OWNER.key --version N NAME",
		Short: "Revoke the current version of a model: its nodes answer no more calls",
		Long: `revoke appends a model.revoked entry signed by the model's owner for version
N, which must be the current one. From the block that takes it, the
ledger accepts no more call receipts for that version and the serving
nodes refuse its calls: a workflow calling it fails with a clear error.
Publish a new version to serve the model again.

Exit status: 0 revoked; 1 refused by the ledger; 2 bad usage.`,
		Example: `  cloister model revoke --ledger http://127.0.0.1:26680 --key hospital-a.key --version 1 hospital-a/stats`,
		Args:    cobra.ExactArgs(1),
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := newClient()
		if err != nil {
			return err
		}
		if keyFile == "" || version == 0 {
			return usageError("model revoke: --key and --version are required")
		}
		k, err := loadKey(keyFile)
		if err != nil {
			return err
		}
		r := model.Revocation{Name: args[0], Version: version, Reason: reason}
		if err := r.Check(); err != nil {
			return usageError("model revoke: %v", err)
		}
		return appendEntry(cmd, c, k.Signer(), model.KindRevoked, r, asJSON, "model revoke")
	}
	f := cmd.Flags()
	f.StringVar(&keyFile, "key", "", "the owner organisation's key file")
	f.Uint64Var(&version, "version", 0, "the model's current version")
	f.StringVar(&reason, "reason", "", "why, recorded in the entry")
	f.BoolVar(&asJSON, "json", false, `print {"index":N,"height":H,"leaf_hash":"…"}`)
	return cmd
}
