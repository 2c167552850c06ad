package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/federation"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/model"
)

func newModelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "model",
		Short: "Federation's computation models on the ledger: publish, list, revoke",
		Long: `An organisation publishes a computation model on the ledger: the program's
SHA-256 (the program stays with the organisation's nodes), the functions it
exports with a JSON Schema for each one's parameters and result, the local
datasets they read (names and schemas, never contents), its output rules,
who may call it and the nodes that serve it (docs/federation.md).`,
		Example: `  cloister model publish --node https://127.0.0.1:7443 --key hospital-a.key --spec model.json --program hospital.wasm
  cloister model list --ledger http://127.0.0.1:26680`,
	}
	cmd.AddCommand(newModelPublishCmd(), newModelListCmd(), newModelRevokeCmd())
	return cmd
}

func newModelListCmd() *cobra.Command {
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
	ledgerListing(cmd, "model list", "print the list as JSON", (*client.Client).Models, func(w io.Writer, l *client.ModelList) error {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
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
	})
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

func newModelPublishCmd() *cobra.Command {
	var nodeU, keyFile, specFile, progFile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "publish --node URL --key OWNER.key --spec MODEL.json --program PROG.wasm",
		Short: "Publish a model: its program stays on the organisation's node, its spec goes on the ledger",
		Long: `publish sends the program to the organisation's own node (started with
--federation and --organisation OWNER), which keeps it, and has the node
append the model.published entry signed by OWNER.key to its ledger.

MODEL.json is the model's spec (docs/federation.md): name, functions with
their params and result JSON Schemas and the datasets each reads,
datasets, output rules, approval. Left out, program_sha256 is the
program's, nodes is the node reached, and version is the model's next.
Every schema must compile (JSON Schema draft 2020-12, no remote
references). It prints the entry's index.

Exit status: 0 published; 1 refused by the node or the ledger; 2 bad usage.`,
		Example: `  cloister model publish --node https://127.0.0.1:7443 --key hospital-a.key --spec model.json --program hospital.wasm`,
		Args:    cobra.NoArgs,
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if nodeU == "" || keyFile == "" || specFile == "" || progFile == "" {
			return usageError("model publish: --node, --key, --spec and --program are required")
		}
		k, err := loadKey(keyFile)
		if err != nil {
			return err
		}
		raw, err := os.ReadFile(specFile)
		if err != nil {
			return usageError("model publish: %v", err)
		}
		var m model.Model
		if err := json.Unmarshal(raw, &m); err != nil {
			return usageError("model publish: %s: %v", specFile, err)
		}
		prog, err := os.ReadFile(progFile)
		if err != nil {
			return usageError("model publish: %v", err)
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		a, err := federation.DialAdmin(ctx, nodeURL(nodeU), nil)
		if err != nil {
			return failure(fmt.Errorf("model publish: %w", err))
		}
		sum := sha256.Sum256(prog)
		if m.ProgramSHA256 == "" {
			m.ProgramSHA256 = hex.EncodeToString(sum[:])
		}
		if len(m.Nodes) == 0 {
			m.Nodes = []string{a.Info.PlatformKey}
		}
		if m.Version == 0 {
			v, err := a.Version(ctx, m.Name)
			if err != nil {
				return failure(fmt.Errorf("model publish: %w", err))
			}
			m.Version = v + 1
		}
		if err := m.Check(); err != nil {
			return usageError("model publish: %s: %v", specFile, err)
		}
		if err := federation.CheckSchemas(&m); err != nil {
			return usageError("model publish: %s: %v", specFile, err)
		}
		idx, err := a.Publish(ctx, k.Signer(), &m, prog)
		if err != nil {
			return failure(fmt.Errorf("model publish: %w", err))
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), map[string]any{"index": idx, "name": m.Name, "version": m.Version, "program_sha256": m.ProgramSHA256})
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s version %d published at #%d\n", m.Name, m.Version, idx)
		return nil
	}
	f := cmd.Flags()
	f.StringVar(&nodeU, "node", "", "the organisation's own node (https://HOST:PORT), started with --federation")
	f.StringVar(&keyFile, "key", "", "the owner organisation's key file")
	f.StringVar(&specFile, "spec", "", "the model's spec (JSON)")
	f.StringVar(&progFile, "program", "", "the model's program (.wasm), kept by the node")
	f.BoolVar(&asJSON, "json", false, `print {"index","name","version","program_sha256"}`)
	return cmd
}
