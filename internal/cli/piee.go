package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/challenge"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/piee"
)

// newPieeCmd is 'piee': proof of isolated execution.
func newPieeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "piee",
		Short: "Proof of isolated execution: challenge operators, epochs, verdicts and scores",
		Long: `Nodes that run with --piee take part in challenge epochs on the ledger: each
is given an operator and an input seed it cannot predict (drawn from a
beacon, the validators' VRF shares of the epoch's input), computes Q in
a deterministic isolate, commits to it, and reveals it signed by its
registered key; peers drawn at random re-execute, commit and reveal too; a
verdict (pass, fail, unavailable or inconclusive) that the ledger itself
recomputes follows, and each node's score. See docs/piee.md for what a pass
proves and what it does not.`,
		Example: `  cloister piee operators --ledger http://127.0.0.1:7480
  cloister piee run-epoch --ledger http://127.0.0.1:7480 --key org1.key --wait
  cloister piee verdicts --ledger http://127.0.0.1:7480 --node ed25519:AAAA...`,
	}
	cmd.AddCommand(newPieeOperatorsCmd(), newPieePublishCmd(), newPieeRunEpochCmd(), newPieeScoresCmd(), newPieeVerdictsCmd())
	return cmd
}

func newPieeOperatorsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "operators --ledger URL",
		Short: "List the challenge operators published on the ledger",
		Long: `operators lists the registry of challenge operators: each a deterministic
program named by its SHA-256, its arguments, class (arith: Q is what it
computes; probe: Q is how the isolate stopped or confined it), limits and
expected cost. "here" says whether this binary carries the program.

Exit status: 0 listed; 1 the ledger is unreachable or answers malformed; 2 bad usage.`,
		Example: `  cloister piee operators --ledger http://127.0.0.1:7480 --json`,
		Args:    cobra.NoArgs,
	}
	ledgerListing(cmd, "piee operators", "print the registry as JSON", (*client.Client).PieeOperators, func(w io.Writer, ops *client.PieeOperators) error {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tCLASS\tARGS\tMEMORY\tTIMEOUT\tCOST\tPROGRAM\tHERE\tENTRY")
		for _, o := range ops.Operators {
			_, here := piee.Module(o.ProgramSHA256)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%dms\t%.16s…\t%v\t%d\n", printable(o.Name), o.Class, printable(strings.Join(o.Args, " ")),
				offerMemory(o.Memory), time.Duration(o.TimeoutMS)*time.Millisecond, o.CostMS, o.ProgramSHA256, here, o.Index)
		}
		return tw.Flush()
	})
	return cmd
}

func newPieePublishCmd() *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "publish --ledger URL --key MEMBER.key",
		Short: "Publish the built-in challenge operators (a consortium member signs)",
		Long: `publish appends a piee.operator entry for each built-in operator the ledger
does not have yet: matmul, hashchain, sort and nn (a fixed-point CNN
forward pass), and the isolation probes probe-memory, probe-deadline,
probe-network and probe-files. The ledger takes operators from consortium
members only; a name is published once.

Exit status: 0 published (or nothing to publish); 1 refused or unreachable; 2 bad usage.`,
		Example: `  cloister piee publish --ledger http://127.0.0.1:7480 --key org1.key`,
		Args:    cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if keyFile == "" {
			return usageError("piee publish: --key is required")
		}
		k, err := keys.Load(keyFile)
		if err != nil {
			return usageError("piee publish: --key: %v", err)
		}
		c, err := newClient()
		if err != nil {
			return err
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		done, err := piee.Publish(ctx, c, k.Signer(), piee.Builtin())
		for _, n := range done {
			fmt.Fprintln(cmd.OutOrStdout(), "published", n)
		}
		if err != nil {
			return ledgerFailure("piee publish", c, err)
		}
		return nil
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "a consortium member's key file")
	return cmd
}

func newPieeRunEpochCmd() *cobra.Command {
	var keyFile string
	var commit, reveal time.Duration
	var verifiers uint64
	var wait, asJSON bool
	cmd := &cobra.Command{
		Use:   "run-epoch --ledger URL --key KEY",
		Short: "Open a challenge epoch now (epochs otherwise follow the nodes' --piee-epoch-every)",
		Long: `run-epoch appends a piee.epoch entry signed by --key (a consortium member's
or a registered node's): every registered node with a live offer is
challenged. The ledger refuses it while the latest epoch still takes
reveals, and (rule version 10 on) within 10 minutes of block time of the
previous epoch's opening, whoever opened it. With --wait it waits until every challenge has a verdict (at most
the two windows plus a minute) and prints them, each recomputed here from
the signed reveals.

Exit status: 0 opened (with --wait: every verdict recorded and agreeing
with the recomputation); 1 refused, unreachable, or a verdict missing or
not agreeing; 2 bad usage.`,
		Example: `  cloister piee run-epoch --ledger http://127.0.0.1:7480 --key org1.key --commit 40s --reveal 20s --wait`,
		Args:    cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if keyFile == "" {
			return usageError("piee run-epoch: --key is required")
		}
		e := challenge.Epoch{CommitSeconds: uint64(commit / time.Second), RevealSeconds: uint64(reveal / time.Second), Verifiers: verifiers}
		if err := e.Check(); err != nil {
			return usageError("piee run-epoch: %v", err)
		}
		k, err := keys.Load(keyFile)
		if err != nil {
			return usageError("piee run-epoch: --key: %v", err)
		}
		c, err := newClient()
		if err != nil {
			return err
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		idx, err := piee.OpenEpoch(ctx, c, k.Signer(), e)
		if err != nil {
			return ledgerFailure("piee run-epoch", c, err)
		}
		ep, err := c.PieeEpoch(ctx, 0, nil)
		if err != nil {
			return ledgerFailure("piee run-epoch", c, err)
		}
		if ep.Epoch.Index != idx {
			return failure(fmt.Errorf("piee run-epoch: the latest epoch is entry %d, not ours (%d)", ep.Epoch.Index, idx))
		}
		if !wait {
			fmt.Fprintf(cmd.OutOrStdout(), "epoch %d (entry %d): %d nodes, commit by %s, reveal by %s\n", ep.Epoch.Number, idx,
				len(ep.Epoch.Participants), time.Unix(ep.Epoch.CommitBy, 0).UTC().Format(time.RFC3339), time.Unix(ep.Epoch.RevealBy, 0).UTC().Format(time.RFC3339))
			return nil
		}
		fs, err := piee.WaitVerdicts(ctx, c, ep.Epoch.Number, time.Unix(ep.Epoch.RevealBy, 0).Add(time.Minute))
		if err != nil {
			return ledgerFailure("piee run-epoch", c, err)
		}
		return printFindings(cmd, fs, asJSON)
	}
	f := cmd.Flags()
	f.StringVar(&keyFile, "key", "", "a consortium member's or a registered node's key file")
	f.DurationVar(&commit, "commit", 60*time.Second, "the commit window (10s to 1h)")
	f.DurationVar(&reveal, "reveal", 30*time.Second, "the reveal window after it (10s to 1h)")
	f.Uint64Var(&verifiers, "verifiers", challenge.DefaultVerifiers, "verifiers drawn per challenged node (1 to 5)")
	f.BoolVar(&wait, "wait", false, "wait for the verdicts and print them")
	f.BoolVar(&asJSON, "json", false, "with --wait: print the verdicts as JSON")
	return cmd
}

func newPieeScoresCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "scores --ledger URL",
		Short: "Print each node's PIEE record: challenges passed, failed, missed; verifications done",
		Long: `scores prints every node's record as the ledger's verdicts made it: as a
challenged node (passed, failed, unavailable, inconclusive) and as a drawn
verifier (agreed with the deciding result, disagreed, missed). Anyone can
recompute it from the verdict entries ('piee verdicts').

Exit status: 0 printed; 1 the ledger is unreachable or answers malformed; 2 bad usage.`,
		Example: `  cloister piee scores --ledger http://127.0.0.1:7480 --json`,
		Args:    cobra.NoArgs,
	}
	ledgerListing(cmd, "piee scores", "print the scores as JSON", (*client.Client).PieeScores, func(w io.Writer, s *client.PieeScores) error {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "NODE\tPASSED\tFAILED\tUNAVAILABLE\tINCONCLUSIVE\tVERIFIED\tDISAGREED\tMISSED\n")
		for _, r := range s.Scores {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", printable(r.Node), r.Passed, r.Failed, r.Unavailable, r.Inconclusive, r.Verified, r.Disagreed, r.Missed)
		}
		return tw.Flush()
	})
	return cmd
}

func newPieeVerdictsCmd() *cobra.Command {
	var node string
	var last uint64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verdicts --ledger URL --node ID",
		Short: "Print a node's verdicts, each recomputed here from the signed reveals",
		Long: `verdicts fetches the latest epochs (--last, default 20), checks each one —
every entry's signature, the beacon's VRF shares, the draw — and, for the
node's challenge in each, recomputes the verdict from the signed reveals and
sets it beside the verdict the ledger recorded. --node is the node's
platform key (ed25519:…).

Exit status: 0 printed and every recorded verdict agrees with its
recomputation; 1 a verdict does not agree, or the ledger is unreachable or
answers malformed; 2 bad usage.`,
		Example: `  cloister piee verdicts --ledger http://127.0.0.1:7480 --node ed25519:AAAA... --json`,
		Args:    cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if _, err := protocol.ParseEd25519Key(node); err != nil {
			return usageError("piee verdicts: --node: %v", err)
		}
		if last < 1 || last > 1000 {
			return usageError("piee verdicts: --last: want 1 to 1000")
		}
		c, err := newClient()
		if err != nil {
			return err
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		latest, err := c.PieeEpoch(ctx, 0, nil)
		if errors.Is(err, client.ErrNotFound) {
			return printFindings(cmd, nil, asJSON)
		}
		if err != nil {
			return ledgerFailure("piee verdicts", c, err)
		}
		var out []piee.Finding
		for n := latest.Epoch.Number; n >= 1 && n+last > latest.Epoch.Number; n-- {
			ep := latest
			if n != latest.Epoch.Number {
				if ep, err = c.PieeEpoch(ctx, n, nil); err != nil {
					return ledgerFailure("piee verdicts", c, err)
				}
			}
			fs, err := piee.Audit(ep)
			if err != nil {
				return failure(fmt.Errorf("piee verdicts: epoch %d: %w", n, err))
			}
			for _, f := range fs {
				if f.Node == node {
					out = append(out, f)
				}
			}
		}
		return printFindings(cmd, out, asJSON)
	}
	f := cmd.Flags()
	f.StringVar(&node, "node", "", "the node's platform key, ed25519:…")
	f.Uint64Var(&last, "last", 20, "how many of the latest epochs to read")
	f.BoolVar(&asJSON, "json", false, "print the verdicts as JSON")
	return cmd
}

// printFindings prints verdicts and fails if a recorded one does not
// agree with its recomputation.
func printFindings(cmd *cobra.Command, fs []piee.Finding, asJSON bool) error {
	if fs == nil {
		fs = []piee.Finding{}
	}
	if asJSON {
		if err := printJSON(cmd.OutOrStdout(), fs); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "EPOCH\tNODE\tOPERATOR\tCLASS\tRECORDED\tRECOMPUTED\tAGREE/DISAGREE/MISSING\tPROVES")
		for _, f := range fs {
			rec := "-"
			if f.Recorded != nil {
				rec = f.Recorded.Outcome
			}
			r := f.Recomputed
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d/%d/%d\t%s\n", f.Epoch, printable(f.Node), f.Operator, printable(f.Class), rec, r.Outcome,
				len(r.Agree), len(r.Disagree), len(r.Missing), r.Proves)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, f := range fs {
		if f.Recorded != nil && !f.Agrees {
			return failure(fmt.Errorf("piee: epoch %d: the recorded verdict on %s (%s) is not the recomputed one (%s)", f.Epoch, f.Node, f.Recorded.Outcome, f.Recomputed.Outcome))
		}
	}
	return nil
}

// pieeNodeFlags are 'cloister node”s flags for taking part in PIEE.
type pieeNodeFlags struct {
	on             bool
	every          time.Duration
	commit, reveal time.Duration
	corrupt        bool
}

func (p *pieeNodeFlags) register(f *pflag.FlagSet) {
	f.BoolVar(&p.on, "piee", false, "take part in proof-of-isolated-execution epochs on the ledger: answer this node's challenges, re-execute peers', commit, reveal, state verdicts (docs/piee.md)")
	f.DurationVar(&p.every, "piee-epoch-every", 0, "with --piee: open an epoch when the last one ended this long ago (0: only when someone runs 'cloister piee run-epoch')")
	f.DurationVar(&p.commit, "piee-commit", 60*time.Second, "with --piee-epoch-every: the commit window of the epochs this node opens")
	f.DurationVar(&p.reveal, "piee-reveal", 30*time.Second, "with --piee-epoch-every: the reveal window of the epochs this node opens")
	f.BoolVar(&p.corrupt, "piee-corrupt", false, "FAULT INJECTION: reveal wrong results, to show that verdicts catch it")
	f.MarkHidden("piee-corrupt")
}

func (p *pieeNodeFlags) check(noLedger bool) error {
	if !p.on && (p.every != 0 || p.corrupt) {
		return usageError("node: --piee-epoch-every and --piee-corrupt need --piee")
	}
	if p.on && noLedger {
		return usageError("node: --piee takes part in epochs on a ledger; --no-ledger excludes it")
	}
	if p.every < 0 {
		return usageError("node: --piee-epoch-every must not be negative")
	}
	if e := (challenge.Epoch{CommitSeconds: uint64(p.commit / time.Second), RevealSeconds: uint64(p.reveal / time.Second)}); p.on && e.Check() != nil {
		return usageError("node: --piee-commit and --piee-reveal: %v", e.Check())
	}
	return nil
}

// start runs the node's agent until ctx ends.
func (p *pieeNodeFlags) start(ctx context.Context, n *node.Node, lc *client.Client, log *slog.Logger) error {
	if !p.on {
		return nil
	}
	a, err := piee.NewAgent(piee.AgentConfig{Ledger: lc, Key: n.PlatformSigner(), Runner: n.Runner(), Class: string(n.Class()),
		EpochEvery: p.every, CommitSeconds: uint64(p.commit / time.Second), RevealSeconds: uint64(p.reveal / time.Second),
		Corrupt: p.corrupt, Log: log})
	if err != nil {
		return err
	}
	if p.corrupt {
		log.Warn("piee: --piee-corrupt: this node reveals WRONG results on purpose")
	}
	go a.Run(ctx)
	log.Info("piee: taking part in challenge epochs", "epoch_every", p.every)
	return nil
}
