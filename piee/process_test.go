package piee_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/testbin"
	"github.com/cloisterhq/cloister/internal/testnet"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/challenge"
	"github.com/cloisterhq/cloister/piee"
)

// TestEpochOnTestNetwork runs a challenge epoch on a loopback network of
// separate processes — a validator and four nodes of four organisations,
// each node taking part with --piee — with n2 rigged to reveal wrong
// results and n3 stopped after its offer went live: the honest nodes
// pass, n2 fails (and, as a verifier, is outvoted), n3 is unavailable,
// every verdict is recomputed here from the signed reveals, and the
// scores say the same. Every wait is bounded.
func TestEpochOnTestNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a validator and four nodes; skipped with -short")
	}
	bin, err := testbin.Cloister()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	specs := testnet.Nodes(4, []string{"software"})
	for i := range specs {
		specs[i].Args = []string{"--piee"}
	}
	specs[1].Args = append(specs[1].Args, "--piee-corrupt")
	nw, err := testnet.Start(ctx, testnet.Options{Dir: filepath.Join(t.TempDir(), "net"), Bin: bin, Nodes: specs,
		NoBroker: true, NoBlobStore: true, NoDispatcher: true, OfferTTL: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	info := nw.Info()
	lc := nw.Ledger()
	org, err := keys.Load(info.Organisations[0].KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	// A node may not publish operators; a member may.
	nodeKey, err := keys.Load(info.Nodes[0].KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := piee.Publish(ctx, lc, nodeKey.Signer(), piee.Builtin()[:1]); err == nil || !strings.Contains(err.Error(), "consortium members") {
		t.Fatalf("a node published an operator: %v", err)
	}
	if _, err := piee.Publish(ctx, lc, org.Signer(), piee.Builtin()); err != nil {
		t.Fatal(err)
	}
	if err := nw.StopComponent(info.Nodes[2].Name); err != nil {
		t.Fatal(err)
	}
	// The CLI opens the epoch and waits for its verdicts.
	cmd := exec.CommandContext(ctx, bin, "piee", "run-epoch", "--ledger", info.LedgerURL, "--key", info.Organisations[0].KeyFile,
		"--commit", "60s", "--reveal", "20s")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("run-epoch: %v\n%s", err, out)
	}
	ep, err := lc.PieeEpoch(ctx, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			for _, n := range info.Nodes {
				b, _ := os.ReadFile(n.Log)
				var lines []string
				for _, l := range strings.Split(string(b), "\n") {
					if strings.Contains(l, "piee") {
						lines = append(lines, l)
					}
				}
				t.Logf("%s's log (piee lines):\n%s", n.Name, strings.Join(lines, "\n"))
			}
		}
	}()
	fs, err := piee.WaitVerdicts(ctx, lc, ep.Epoch.Number, time.Unix(ep.Epoch.RevealBy, 0).Add(90*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{info.Nodes[0].PlatformKey: challenge.Pass, info.Nodes[1].PlatformKey: challenge.Fail,
		info.Nodes[2].PlatformKey: challenge.Unavailable, info.Nodes[3].PlatformKey: challenge.Pass}
	for _, f := range fs {
		t.Logf("%s (%s): %s, agree %d disagree %d missing %d — %s", f.Node, f.Operator, f.Recorded.Outcome,
			len(f.Recorded.Agree), len(f.Recorded.Disagree), len(f.Recorded.Missing), f.Recorded.Proves)
		if !f.Agrees {
			t.Errorf("%s: recorded %+v, recomputed %+v", f.Node, f.Recorded, f.Recomputed)
		}
		if f.Recorded.Outcome != want[f.Node] {
			t.Errorf("%s: %s, want %s", f.Node, f.Recorded.Outcome, want[f.Node])
		}
	}
	s, err := lc.PieeScores(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range s.Scores {
		if r.Node == info.Nodes[1].PlatformKey && (r.Failed != 1 || r.Disagreed == 0) {
			t.Errorf("the rigged node's score: %+v", r)
		}
		if r.Node == info.Nodes[2].PlatformKey && (r.Unavailable != 1 || r.Failed != 0) {
			t.Errorf("the stopped node's score: %+v", r)
		}
	}
	// 'piee verdicts' recomputes and agrees.
	out, err := exec.CommandContext(ctx, bin, "piee", "verdicts", "--ledger", info.LedgerURL, "--node", info.Nodes[1].PlatformKey).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "fail") {
		t.Fatalf("piee verdicts: %v\n%s", err, out)
	}
	if ep, err = lc.PieeEpoch(ctx, ep.Epoch.Number, nil); err != nil {
		t.Fatal(err)
	}
	// A replayed epoch answer: the rigged node's reveal of this epoch
	// submitted again is refused (replayed nonce), and so is a new one
	// once the reveal deadline is past.
	for _, se := range ep.Entries {
		if se.Entry.Kind == challenge.KindReveal {
			if _, err := lc.Append(ctx, se); err == nil {
				t.Fatal("a replayed reveal was taken")
			}
			break
		}
	}
}
