package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/internal/testnet"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/challenge"
	"github.com/cloisterhq/cloister/piee"
)

func newDemoPieeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "piee",
		Short: "Play seed 000's proof of isolated execution on four nodes, one rigged to lie and one stopped",
		Long: `piee plays proof of isolated execution on a test network of separate
processes ('cloister testnet': a validator and four nodes of four
organisations, each taking part with --piee), printing each step with its
time:

  org1        publishes the challenge operators (matmul, hashchain, sort, a
              fixed-point CNN forward pass, and the memory, deadline,
              network and file probes) by hash
  demo        stops n3, as an outage would, after its offer went live;
              n2 runs with --piee-corrupt: it reveals wrong results
  org1        opens an epoch; the draw follows from the beacon (the
              validators' VRF shares of the epoch's input, carried in their
              votes): each node's operator θ, input seed and three verifiers
  nodes       compute Q = ξ(U) in their isolates and commit to it, then
              reveal Q signed by their registered keys (equation 1); the
              verifiers re-execute and do the same (equation 2)
  ledger      takes a verdict per node only if it is the one the reveals
              add up to; scores follow

It recomputes every verdict from the signed reveals, and checks that the
honest nodes pass, the rigged one fails (and is outvoted as a verifier)
and the stopped one is unavailable, not failed.

Exit status: 0 every node was judged as it behaved; 1 otherwise.`,
		Example: `  cloister demo piee`,
		Args:    cobra.NoArgs,
	}
	return componentsDemo(cmd, "tell the test network's events on standard error", runPieeDemo)
}

// runPieeDemo plays the PIEE demo with self as every component's binary.
func runPieeDemo(ctx context.Context, out, errOut io.Writer, self string, verbose bool) error {
	ctx, stage, end, err := stageDemo(ctx, out, errOut, verbose, "piee", 12*time.Minute)
	if err != nil {
		return err
	}
	defer end()
	pr, dir := stage.pr, stage.dir
	events := stage.events
	specs := testnet.Nodes(4, []string{"software"})
	for i := range specs {
		specs[i].Args = []string{"--piee"}
	}
	const rigged, stopped = 1, 2
	specs[rigged].Args = append(specs[rigged].Args, "--piee-corrupt")
	nw, err := testnet.Start(ctx, testnet.Options{Dir: filepath.Join(dir, "net"), Bin: self, Nodes: specs, NoBroker: true,
		NoBlobStore: true, NoDispatcher: true, OfferTTL: 5 * time.Minute, Out: events, Label: "cloister demo"})
	if err != nil {
		return err
	}
	defer nw.Stop()
	info := nw.Info()
	lc := nw.Ledger()
	name := map[string]string{}
	for _, n := range info.Nodes {
		name[n.PlatformKey] = n.Name
	}
	nm := func(key string) string {
		if n, ok := name[key]; ok {
			return n
		}
		return key
	}
	pr.step("test network up, each component a process: validator %s, nodes %s", info.LedgerURL, strings.Join(slices.Sorted(mapValues(name)), ", "))
	for _, n := range info.Nodes {
		pr.note("%s (%s, class %s) at %s, key %s", n.Name, n.Organisation, n.Class, n.URL, n.PlatformKey)
	}

	org, err := keys.Load(info.Organisations[0].KeyFile)
	if err != nil {
		return err
	}
	published, err := piee.Publish(ctx, lc, org.Signer(), piee.Builtin())
	if err != nil {
		return err
	}
	pr.step("org1 published %d operators, program %.16s…: %s", len(published), piee.ProgramSHA256, strings.Join(published, ", "))

	if err := nw.StopComponent(info.Nodes[stopped].Name); err != nil {
		return err
	}
	pr.step("demo: stopped %s as an outage would (its offer is still live); %s reveals wrong results on purpose (--piee-corrupt)",
		info.Nodes[stopped].Name, info.Nodes[rigged].Name)

	idx, err := piee.OpenEpoch(ctx, lc, org.Signer(), challenge.Epoch{CommitSeconds: 60, RevealSeconds: 20})
	if err != nil {
		return fmt.Errorf("opening the epoch: %w", err)
	}
	ep, err := lc.PieeEpoch(ctx, 0, nil)
	if err != nil {
		return err
	}
	if ep.Epoch.Index != idx {
		return fmt.Errorf("the latest epoch is entry %d, not the one opened (%d)", ep.Epoch.Index, idx)
	}
	n := ep.Epoch.Number
	pr.step("org1 opened epoch %d (entry %d): %d participants; commits until %s, reveals until %s", n, idx, len(ep.Epoch.Participants),
		time.Unix(ep.Epoch.CommitBy, 0).Format(time.TimeOnly), time.Unix(ep.Epoch.RevealBy, 0).Format(time.TimeOnly))

	seen := map[string]bool{}
	drawn := false
	deadline := time.Unix(ep.Epoch.RevealBy, 0).Add(2 * time.Minute)
	for {
		if ep, err = lc.PieeEpoch(ctx, n, nil); err != nil {
			return err
		}
		if ep.Draw != nil && !drawn {
			drawn = true
			if ep.BeaconNote != nil {
				pr.step("beacon: the checkpoint of size %d, cosigned after the epoch entry; the draw (checked here from the note):", ep.BeaconSize)
			} else {
				pr.step("beacon: the validators' VRF shares of the epoch's input, a quorum's on the ledger; the draw (checked here from the shares):")
			}
			for _, ch := range ep.Draw {
				vs := make([]string, len(ch.Verifiers))
				for i, v := range ch.Verifiers {
					vs[i] = nm(v)
				}
				pr.note("%s: θ = %s, U from seed %.16s…, verifiers %s", nm(ch.Node), ch.Operator, ch.Seed, strings.Join(vs, ", "))
			}
		}
		verdicts := 0
		for _, se := range ep.Entries {
			h := string(se.Encode())
			if seen[h] {
				if se.Entry.Kind == challenge.KindVerdict {
					verdicts++
				}
				continue
			}
			seen[h] = true
			who := nm(se.Entry.Submitter)
			switch se.Entry.Kind {
			case challenge.KindCommit:
				c, err := challenge.DecodeCommit(se.Entry.Body)
				if err == nil {
					pr.step("%s committed H(%s ‖ challenge ‖ Q) for %s's challenge", who, who, nm(c.Node))
				}
			case challenge.KindReveal:
				r, err := challenge.DecodeReveal(se.Entry.Body)
				if err == nil {
					pr.step("%s revealed Q = %.16s… for %s (%s: %s, exit %d), signed; protections: %s", who, r.Statement.Result, nm(r.Statement.Node),
						r.Statement.Operator, r.Statement.Run.Outcome, r.Statement.Run.ExitCode, strings.Join(r.Statement.Run.Protections, ","))
				}
			case challenge.KindVerdict:
				verdicts++
				v, err := challenge.DecodeVerdict(se.Entry.Body)
				if err == nil {
					pr.step("verdict on %s: %s (agree %d, disagree %d, missing %d), stated by %s", nm(v.Node), strings.ToUpper(v.Outcome),
						len(v.Agree), len(v.Disagree), len(v.Missing), who)
				}
			}
		}
		if ep.Draw != nil && verdicts == len(ep.Draw) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("epoch %d: %d of %d verdicts by %s", n, verdicts, len(ep.Draw), deadline.Format(time.TimeOnly))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}

	fs, err := piee.Audit(ep)
	if err != nil {
		return err
	}
	want := map[string]string{}
	for i, node := range info.Nodes {
		switch i {
		case rigged:
			want[node.PlatformKey] = challenge.Fail
		case stopped:
			want[node.PlatformKey] = challenge.Unavailable
		default:
			want[node.PlatformKey] = challenge.Pass
		}
	}
	var bad []string
	for _, f := range fs {
		ok := f.Agrees && f.Recorded.Outcome == want[f.Node]
		mark := "as expected"
		if !ok {
			mark = "NOT as expected (want " + want[f.Node] + ")"
			bad = append(bad, nm(f.Node))
		}
		pr.note("%s: %s, recomputed here from the signed reveals: %s — %s; %s", nm(f.Node), f.Recorded.Outcome, f.Recomputed.Outcome, mark, f.Recomputed.Proves)
	}
	s, err := lc.PieeScores(ctx)
	if err != nil {
		return err
	}
	pr.step("scores, as the ledger's verdicts made them:")
	for _, r := range s.Scores {
		pr.note("%s: passed %d, failed %d, unavailable %d; as a verifier: agreed %d, disagreed %d, missed %d",
			nm(r.Node), r.Passed, r.Failed, r.Unavailable, r.Verified, r.Disagreed, r.Missed)
		if r.Node == info.Nodes[rigged].PlatformKey && r.Disagreed == 0 {
			bad = append(bad, nm(r.Node)+" (not outvoted as a verifier)")
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("not judged as they behaved: %s", strings.Join(bad, ", "))
	}
	// The console of an honest node shows the same verdicts and scores.
	viewer := info.Nodes[0]
	for i, n := range info.Nodes {
		if i != rigged && i != stopped {
			viewer = n
			break
		}
	}
	if err := pieeConsoleShows(ctx, viewer.Console, info.Nodes[rigged].PlatformKey, want); err != nil {
		return err
	}
	pr.step("console of %s shows the scores and the verdicts: %spiee", viewer.Name, viewer.Console)
	pr.step("all steps behaved: the honest nodes passed, %s failed and was outvoted as a verifier, %s was unavailable (not failed)",
		info.Nodes[rigged].Name, info.Nodes[stopped].Name)
	return nil
}

func mapValues(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// pieeConsoleShows checks a node's PIEE console page: every node's latest
// verdict is the outcome want names, and the rigged node is counted as
// failed. The console's explorer follows the ledger, so this waits
// (bounded) for it.
func pieeConsoleShows(ctx context.Context, base, rigged string, want map[string]string) error {
	if base == "" {
		return errors.New("console: the node has no console")
	}
	return awaitConsole(ctx, base, func(ctx context.Context) error {
		var d struct {
			Scores *struct {
				Scores []struct {
					Node   string `json:"node"`
					Failed uint64 `json:"failed"`
				} `json:"scores"`
			} `json:"scores"`
			ScoresError string `json:"scores_error"`
			Verdicts    []struct {
				Node    string `json:"node"`
				Outcome string `json:"outcome"`
			} `json:"verdicts"`
		}
		if _, err := consoleGet(ctx, base, "api/piee", &d); err != nil {
			return err
		}
		if _, err := consoleGet(ctx, base, "piee", nil); err != nil {
			return err
		}
		if d.Scores == nil {
			return fmt.Errorf("no scores: %s", d.ScoresError)
		}
		failed := false
		for _, s := range d.Scores.Scores {
			failed = failed || s.Node == rigged && s.Failed > 0
		}
		seen := map[string]string{}
		for _, v := range d.Verdicts { // newest first
			if _, ok := seen[v.Node]; !ok {
				seen[v.Node] = v.Outcome
			}
		}
		for node, outcome := range want {
			if seen[node] != outcome {
				return fmt.Errorf("the PIEE page shows %s's latest verdict as %q, want %q", node, seen[node], outcome)
			}
		}
		if !failed {
			return errors.New("the PIEE page does not count the rigged node's failure")
		}
		return nil
	})
}
