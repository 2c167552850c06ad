package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/federation"
	"github.com/cloisterhq/cloister/ledger/verify"
)

func newApprovalCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "approval",
		Short: "Plans of federated calls: an initiator requests one, a person of the model's owner grants or denies it",
		Long: `A plan names the total model (its SHA-256), the functions of one model it
calls with limits on their arguments, a call budget and an expiry. The
initiator requests it from the owner's node; in the model's automatic
approval mode its allow-list approves it at once, in manual mode it waits
for a person of the owner. Once approved, the owner's node signs each
exact call that fits the plan without anyone waiting, and refuses every
other call with the reason (docs/federation.md, decision 0124).`,
		Example: `  cloister approval list --node https://127.0.0.1:7443 --key hospital-a.key
  cloister approval grant --node https://127.0.0.1:7443 --key hospital-a.key 3f1c…`,
	}
	cmd.AddCommand(newApprovalRequestCmd(), newApprovalListCmd(), newApprovalDecideCmd(true), newApprovalDecideCmd(false))
	return cmd
}

func newApprovalRequestCmd() *cobra.Command {
	var nodeU, keyFile, modelName, total, expires, note string
	var functions []string
	var version, calls uint64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "request --node OWNER-NODE --key INITIATOR.key --model NAME --total TOTAL.wasm --function F[=LIMITS.json] --calls N [--expires 24h]",
		Short: "Ask a model owner's node to approve a plan of calls",
		Long: `request signs a plan with the initiator's key and sends it to the node
that serves the model: the total model TOTAL.wasm (its SHA-256) may call
each --function of --model, at most --calls times in all, until --expires.
A function's LIMITS.json is a JSON Schema its arguments must satisfy
besides the published one (for instance {"properties":{"column":{"const":"age"}}}).
The plan's id is printed, and whether it is approved (automatic mode) or
awaits a person (manual mode).

Exit status: 0 submitted; 1 refused by the node; 2 bad usage.`,
		Example: `  cloister approval request --node https://127.0.0.1:7443 --key research.key --model hospital-a/stats \
      --total fedlogreg.wasm --function gradient --function count=count-limits.json --calls 40 --expires 24h`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if nodeU == "" || keyFile == "" || modelName == "" || total == "" || len(functions) == 0 || calls == 0 {
			return usageError("approval request: --node, --key, --model, --total, --function and --calls are required")
		}
		k, err := loadKey(keyFile)
		if err != nil {
			return err
		}
		d, err := time.ParseDuration(expires)
		if err != nil || d <= 0 {
			return usageError("approval request: --expires %q: want a duration such as 24h", expires)
		}
		wasm, err := os.ReadFile(total)
		if err != nil {
			return usageError("approval request: %v", err)
		}
		sum := sha256.Sum256(wasm)
		p := federation.Plan{Model: modelName, Version: version, Total: hex.EncodeToString(sum[:]), Calls: calls,
			Expires: verify.FormatTime(time.Now().Add(d)), Note: note}
		for _, f := range functions {
			name, path, limited := strings.Cut(f, "=")
			pf := federation.PlanFunction{Name: name}
			if limited {
				if pf.Args, err = os.ReadFile(path); err != nil {
					return usageError("approval request: --function %s: %v", f, err)
				}
			}
			p.Functions = append(p.Functions, pf)
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		a, err := federation.DialAdmin(ctx, nodeURL(nodeU), nil)
		if err != nil {
			return failure(fmt.Errorf("approval request: %w", err))
		}
		if p.Version == 0 {
			if p.Version, err = a.Version(ctx, modelName); err != nil {
				return failure(fmt.Errorf("approval request: %w", err))
			}
		}
		rec, err := a.SubmitPlan(ctx, k.Signer(), &p)
		if err != nil {
			return failure(fmt.Errorf("approval request: %w", err))
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), rec)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "plan %s: %s", rec.ID, rec.State)
		if rec.By != "" {
			fmt.Fprintf(cmd.OutOrStdout(), " by %s", rec.By)
		}
		fmt.Fprintln(cmd.OutOrStdout())
		return nil
	}
	f := cmd.Flags()
	f.StringVar(&nodeU, "node", "", "a node serving the model (https://HOST:PORT)")
	f.StringVar(&keyFile, "key", "", "the initiator's principal key file")
	f.StringVar(&modelName, "model", "", "the model the plan calls (organisation/name)")
	f.Uint64Var(&version, "version", 0, "the model's version (0: its current one)")
	f.StringVar(&total, "total", "", "the total model (.wasm) whose calls the plan approves")
	f.StringArrayVar(&functions, "function", nil, "F or F=LIMITS.json: a function the plan calls, with a JSON Schema limiting its arguments (repeatable)")
	f.Uint64Var(&calls, "calls", 0, "the plan's call budget")
	f.StringVar(&expires, "expires", "24h", "how long the plan lasts")
	f.StringVar(&note, "note", "", "a note for the person who approves it")
	f.BoolVar(&asJSON, "json", false, "print the plan's record as JSON")
	return cmd
}

func newApprovalListCmd() *cobra.Command {
	var nodeU, keyFile string
	var all, asJSON bool
	cmd := &cobra.Command{
		Use:   "list --node URL --key OWNER.key [--all]",
		Short: "List the plans awaiting a person on the organisation's own node",
		Long: `list asks the organisation's own node, in a request signed by OWNER.key,
for the plans awaiting a person's decision (with --all, every plan it
keeps, with its state and the calls answered under it).

Exit status: 0 listed; 1 refused by the node; 2 bad usage.`,
		Example: `  cloister approval list --node https://127.0.0.1:7443 --key hospital-a.key`,
		Args:    cobra.NoArgs,
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx, stop, a, k, err := dialOwnNode(cmd, "approval list", nodeU, keyFile)
		if err != nil {
			return err
		}
		defer stop()
		recs, err := a.Approvals(ctx, k, all)
		if err != nil {
			return failure(fmt.Errorf("approval list: %w", err))
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), recs)
		}
		printPlans(cmd.OutOrStdout(), recs)
		return nil
	}
	f := cmd.Flags()
	f.StringVar(&nodeU, "node", "", "the organisation's own node (https://HOST:PORT)")
	f.StringVar(&keyFile, "key", "", "the owner organisation's key file")
	f.BoolVar(&all, "all", false, "list every plan, not only those awaiting a person")
	f.BoolVar(&asJSON, "json", false, "print the plans as JSON")
	return cmd
}

func printPlans(w io.Writer, recs []federation.PlanRecord) {
	if len(recs) == 0 {
		fmt.Fprintln(w, "no plans")
	}
	for _, r := range recs {
		fns := make([]string, len(r.Plan.Functions))
		for i, f := range r.Plan.Functions {
			fns[i] = f.Name
			if len(f.Args) > 0 {
				var v any
				json.Unmarshal(f.Args, &v)
				b, _ := json.Marshal(v)
				fns[i] += " " + string(b)
			}
		}
		fmt.Fprintf(w, "%s  %s  %s v%d  total %s  initiator %s\n    functions: %s\n    calls %d of %d, expires %s",
			r.ID, r.State, r.Plan.Model, r.Plan.Version, r.Plan.Total[:16], r.Initiator, strings.Join(fns, "; "), r.Used, r.Plan.Calls, r.Plan.Expires)
		if r.Plan.Note != "" {
			fmt.Fprintf(w, "\n    note: %s", r.Plan.Note)
		}
		fmt.Fprintln(w)
	}
}

func newApprovalDecideCmd(grant bool) *cobra.Command {
	var nodeU, keyFile, reason string
	var asJSON bool
	verb, what := "deny", "Deny"
	if grant {
		verb, what = "grant", "Approve"
	}
	cmd := &cobra.Command{
		Use:   verb + " --node URL --key OWNER.key PLAN",
		Short: what + " a plan awaiting a person, with the organisation's key",
		Long: verb + ` signs the decision on plan PLAN (its id, from 'approval list') with
OWNER.key and sends it to the organisation's own node, which keeps it:
from then on the node answers the calls that fit a granted plan and
refuses the others; a denied plan answers none.

Exit status: 0 recorded; 1 refused by the node (not pending, unknown); 2 bad usage.`,
		Example: "  cloister approval " + verb + " --node https://127.0.0.1:7443 --key hospital-a.key 3f1c…",
		Args:    cobra.ExactArgs(1),
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx, stop, a, k, err := dialOwnNode(cmd, "approval "+verb, nodeU, keyFile)
		if err != nil {
			return err
		}
		defer stop()
		rec, err := a.Decide(ctx, k, &federation.Decision{Plan: args[0], Grant: grant, Reason: reason})
		if err != nil {
			return failure(fmt.Errorf("approval %s: %w", verb, err))
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), rec)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "plan %s: %s by %s\n", rec.ID, rec.State, rec.By)
		return nil
	}
	f := cmd.Flags()
	f.StringVar(&nodeU, "node", "", "the organisation's own node (https://HOST:PORT)")
	f.StringVar(&keyFile, "key", "", "the owner organisation's key file")
	f.StringVar(&reason, "reason", "", "why (kept with the decision)")
	f.BoolVar(&asJSON, "json", false, "print the plan's record as JSON")
	return cmd
}
