package pieebench

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/bench/internal/measure"
	"github.com/cloisterhq/cloister/internal/testbin"
	"github.com/cloisterhq/cloister/internal/testnet"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/challenge"
	"github.com/cloisterhq/cloister/piee"
)

// BenchmarkRound runs whole challenge rounds on the loopback test network
// (package internal/testnet): four validators and four software nodes
// with --piee, each its own process. Each round is a fresh network (the
// ledger opens at most one epoch per 10 minutes of block time, decision
// 0138); only the round is timed. A round: the operators are published,
// a member opens an epoch (30 s to commit, 15 s to reveal), the
// validators' VRF shares give the beacon, every node answers its
// challenge and re-executes k = 3 others', commits, reveals, and
// verdicts follow. Reported:
//
//   - beacon-s: the epoch entry to the piee.beacon entry (entry times);
//
//   - work-s: the epoch entry to the last commit (entry times): how long
//     the nodes took to run 16 challenges, the windows aside;
//
//   - round-s: the epoch entry to the last verdict (entry times), which
//     the windows dominate;
//
//   - node-cpu-s, node-cpu-max-s: CPU time per node process over the
//     round, its jailed workers included (mean, and the busiest node);
//
//   - node-idle-cpu-s: a node's CPU over as long with no epoch running
//     (measured for idleWindow before the epoch, scaled): the baseline;
//
//   - validator-cpu-s: CPU time per validator process over the round.
//
//     go test -run '^$' -bench Round -benchtime 2x -timeout 30m ./bench/piee
func BenchmarkRound(b *testing.B) {
	if testing.Short() {
		b.Skip("starts networks of eight processes")
	}
	bin, err := testbin.Cloister()
	if err != nil {
		b.Fatal(err)
	}
	var beacon, work, round, nodeCPU, nodeMax, idle, valCPU time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		r := oneRound(b, bin, i)
		b.StartTimer()
		beacon += r.beacon
		work += r.work
		round += r.round
		nodeCPU += r.nodeCPU
		nodeMax += r.nodeMax
		idle += r.idle
		valCPU += r.valCPU
	}
	n := float64(b.N)
	b.ReportMetric(beacon.Seconds()/n, "beacon-s")
	b.ReportMetric(work.Seconds()/n, "work-s")
	b.ReportMetric(round.Seconds()/n, "round-s")
	b.ReportMetric(nodeCPU.Seconds()/n, "node-cpu-s")
	b.ReportMetric(nodeMax.Seconds()/n, "node-cpu-max-s")
	b.ReportMetric(idle.Seconds()/n, "node-idle-cpu-s")
	b.ReportMetric(valCPU.Seconds()/n, "validator-cpu-s")
	if out, err := exec.Command("uptime").Output(); err == nil {
		b.Logf("uptime: %s", strings.TrimSpace(string(out)))
	}
}

type roundFigures struct {
	beacon, work, round, nodeCPU, nodeMax, idle, valCPU time.Duration
}

// idleWindow is how long the nodes' baseline CPU is measured.
const idleWindow = 15 * time.Second

func oneRound(b *testing.B, bin string, i int) roundFigures {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	specs := testnet.Nodes(4, []string{"software"})
	for j := range specs {
		specs[j].Args = []string{"--piee"}
	}
	nw, err := testnet.Start(ctx, testnet.Options{Dir: filepath.Join(b.TempDir(), fmt.Sprint("net", i)), Bin: bin, Nodes: specs,
		Validators: 4, NoBroker: true, NoBlobStore: true, NoDispatcher: true, OfferTTL: 5 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	defer nw.Stop()
	info := nw.Info()
	lc := nw.Ledger()
	org, err := keys.Load(info.Organisations[0].KeyFile)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := piee.Publish(ctx, lc, org.Signer(), piee.Builtin()); err != nil {
		b.Fatal(err)
	}
	var nodes, vals []int
	for _, n := range info.Nodes {
		nodes = append(nodes, n.PID)
	}
	for _, v := range info.Validators {
		vals = append(vals, v.PID)
	}
	// The nodes' CPU with no epoch running (agents polling, offers
	// renewed), over idleWindow, as the baseline a round adds to.
	idle0 := treeCPUs(nodes)
	time.Sleep(idleWindow)
	idle1 := treeCPUs(nodes)
	var idle time.Duration
	for j := range nodes {
		idle += (idle1[j] - idle0[j]) / time.Duration(len(nodes))
	}
	nodes0, vals0 := treeCPUs(nodes), treeCPUs(vals)
	opened := time.Now()
	if _, err := piee.OpenEpoch(ctx, lc, org.Signer(), challenge.Epoch{CommitSeconds: 30, RevealSeconds: 15}); err != nil {
		b.Fatal(err)
	}
	ep, err := lc.PieeEpoch(ctx, 0, nil)
	if err != nil {
		b.Fatal(err)
	}
	fs, err := piee.WaitVerdicts(ctx, lc, ep.Epoch.Number, time.Unix(ep.Epoch.RevealBy, 0).Add(90*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	var f roundFigures
	nodes1, vals1 := treeCPUs(nodes), treeCPUs(vals)
	f.idle = time.Duration(float64(idle) * time.Since(opened).Seconds() / idleWindow.Seconds())
	for j := range nodes {
		d := nodes1[j] - nodes0[j]
		f.nodeCPU += d / time.Duration(len(nodes))
		f.nodeMax = max(f.nodeMax, d)
	}
	for j := range vals {
		f.valCPU += (vals1[j] - vals0[j]) / time.Duration(len(vals))
	}
	for _, x := range fs {
		if x.Recorded.Outcome != challenge.Pass || !x.Agrees {
			b.Fatalf("%s: %s (agrees %v)", x.Node, x.Recorded.Outcome, x.Agrees)
		}
	}
	if ep, err = lc.PieeEpoch(ctx, ep.Epoch.Number, nil); err != nil {
		b.Fatal(err)
	}
	var epochAt, lastCommit, lastVerdict, beacon time.Time
	for _, se := range ep.Entries {
		t := se.Entry.ParsedTime()
		switch se.Entry.Kind {
		case challenge.KindEpoch:
			epochAt = t
		case challenge.KindBeacon:
			beacon = t
		case challenge.KindCommit:
			lastCommit = later(lastCommit, t)
		case challenge.KindVerdict:
			lastVerdict = later(lastVerdict, t)
		}
	}
	f.beacon, f.work, f.round = beacon.Sub(epochAt), lastCommit.Sub(epochAt), lastVerdict.Sub(epochAt)
	b.Logf("round %d: beacon %.1fs, work %.1fs, round %.1fs; node CPU %.2fs (max %.2fs; idle over as long %.2fs), validator CPU %.2fs",
		i, f.beacon.Seconds(), f.work.Seconds(), f.round.Seconds(), f.nodeCPU.Seconds(), f.nodeMax.Seconds(), f.idle.Seconds(), f.valCPU.Seconds())
	return f
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// treeCPUs is, for each pid, measure.TreeCPU: the process, its live
// descendants (a node's warm jailed workers) and its reaped children.
func treeCPUs(pids []int) []time.Duration {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		out[i] = measure.TreeCPU(pid)
	}
	return out
}
