package cli

import (
	"context"
	"crypto/ed25519"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/federation"
)

func newDatasetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "dataset",
		Short:   "Local datasets of an organisation's node, read by its published models",
		Example: `  cloister dataset add --node https://127.0.0.1:7443 --key hospital-a.key patients.csv ./patients.csv`,
	}
	cmd.AddCommand(newDatasetAddCmd())
	return cmd
}

func newDatasetAddCmd() *cobra.Command {
	var nodeU, keyFile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "add --node URL --key OWNER.key NAME PATH",
		Short: "Register a file with the organisation's own node as its local dataset NAME",
		Long: `add sends the file at PATH to the organisation's own node (started with
--federation and --organisation OWNER), over TLS pinned to the platform
key the node presents, in a request signed by OWNER.key; the node keeps
it as the dataset NAME. It never leaves that node: a sub-model reads it
as /input/NAME, and only results its output rules allow go out. Adding a
name again replaces the file.

Exit status: 0 added; 1 refused by the node; 2 bad usage.`,
		Example: `  cloister dataset add --node https://127.0.0.1:7443 --key hospital-a.key patients.csv ./patients.csv`,
		Args:    cobra.ExactArgs(2),
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx, stop, a, k, err := dialOwnNode(cmd, "dataset add", nodeU, keyFile)
		if err != nil {
			return err
		}
		defer stop()
		d, err := a.AddDataset(ctx, k, args[0], args[1])
		if err != nil {
			return failure(fmt.Errorf("dataset add: %w", err))
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), d)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "dataset %s: %d bytes, sha256 %s, on node %s\n", d.Name, d.Size, d.SHA256, a.Info.PlatformKey)
		return nil
	}
	f := cmd.Flags()
	f.StringVar(&nodeU, "node", "", "the organisation's own node (https://HOST:PORT), started with --federation")
	f.StringVar(&keyFile, "key", "", "the owner organisation's key file")
	f.BoolVar(&asJSON, "json", false, `print {"name","sha256","size"}`)
	return cmd
}

// dialOwnNode checks --node and --key, loads the key and connects to the
// node at nodeU, for command what; on error it returns the error to give
// cobra (the context is already released).
func dialOwnNode(cmd *cobra.Command, what, nodeU, keyFile string) (context.Context, context.CancelFunc, *federation.Admin, ed25519.PrivateKey, error) {
	if nodeU == "" || keyFile == "" {
		return nil, nil, nil, nil, usageError("%s: --node and --key are required", what)
	}
	k, err := loadKey(keyFile)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	ctx, stop := signalContext(cmd)
	a, err := federation.DialAdmin(ctx, nodeURL(nodeU), nil)
	if err != nil {
		stop()
		return nil, nil, nil, nil, failure(fmt.Errorf("%s: %w", what, err))
	}
	return ctx, stop, a, k.Signer(), nil
}
