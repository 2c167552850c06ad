package ledger

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/ledger/challenge"
)

// pieeWorld is a v9 chain with one organisation (a member), four
// registered nodes with live offers and two published operators.
type pieeWorld struct {
	c     *aclChain
	org   ed25519.PrivateKey
	nodes map[string]ed25519.PrivateKey // by text key
	keys  []string                      // sorted
}

func newPieeWorld(t *testing.T) *pieeWorld { return newPieeWorldOn(newACLChain(t, RulesV9)) }

// newPieeWorldOn builds the world on chain c, whose first validator
// admits the organisation.
func newPieeWorldOn(c *aclChain) *pieeWorld {
	w := &pieeWorld{c: c, org: seedKey(0x91), nodes: map[string]ed25519.PrivateKey{}}
	c.want([][]byte{c.entry(c.keys[0], KindMemberAdmitted, map[string]any{"member": pubText(w.org)})}, "ok")
	var regs, offers [][]byte
	for i := range 4 {
		k := seedKey(byte(0x92 + i))
		w.nodes[pubText(k)] = k
		b := nodeBody(k.Public().(ed25519.PublicKey))
		b["organisation"], b["endpoint"] = pubText(w.org), "https://127.0.0.1:1"
		regs = append(regs, c.entry(k, KindNodeRegistered, b))
		offers = append(offers, c.entry(k, KindOffer, offerBody(600)))
	}
	c.want(regs, "ok", "ok", "ok", "ok")
	c.want(offers, "ok", "ok", "ok", "ok")
	for k := range w.nodes {
		w.keys = append(w.keys, k)
	}
	sortStrings(w.keys)
	return w
}

func sortStrings(s []string) {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
}

func testOperator(name string) challenge.Operator {
	return challenge.Operator{Name: name, ProgramSHA256: strings.Repeat("11", 32), Args: []string{name, "16"},
		Class: challenge.ClassArith, Memory: 64 << 20, TimeoutMS: 5000, CostMS: 5}
}

// draw reads epoch n's draw from the committed state, as a client would.
func (w *pieeWorld) draw(n uint64) []challenge.Challenge {
	var out []challenge.Challenge
	w.c.a.store.view(func(r reader) error {
		v := blockView{r: r}
		ep, _ := getRecord[EpochRecord](v, bucketPieeEpochs, be64(n))
		note, _, ok := beaconNote(v, ep.Index)
		if !ok {
			w.c.t.Fatal("no beacon yet")
		}
		out = challenge.Draw(challenge.Beacon(note), n, ep.Participants, ep.Operators, ep.K)
		return nil
	})
	return out
}

func (w *pieeWorld) score(node string) Score {
	var s Score
	w.c.a.store.view(func(r reader) error {
		pk := w.nodes[node].Public().(ed25519.PublicKey)
		if p, ok := getRecord[Score](blockView{r: r}, bucketPieeScores, pk); ok {
			s = *p
		}
		return nil
	})
	return s
}

func run(out string) challenge.Run {
	return challenge.Run{Outcome: "exited", Output: strings.Repeat(out, 32), Engine: "wazero v1", Protections: []string{"netns", "seccomp"}, Class: "software"}
}

func (w *pieeWorld) statement(epoch uint64, ch challenge.Challenge, r challenge.Run) challenge.Statement {
	return challenge.Statement{Epoch: epoch, Node: ch.Node, Challenge: ch.ID, Operator: ch.Operator,
		Program: strings.Repeat("11", 32), Seed: ch.Seed, Result: challenge.ResultDigest(r), Run: r}
}

// One epoch, every attack of issue 18 that the ledger itself refuses, and
// the verdicts: honest nodes pass, a node that answers wrongly fails, a
// node that is down is unavailable, a lying verifier is outvoted and
// recorded; verdicts are recomputed, not believed.
func TestPieeEpoch(t *testing.T) {
	t.Parallel()
	w := newPieeWorld(t)
	c := w.c
	outsider := seedKey(0x9f)
	c.want([][]byte{
		c.entry(w.nodes[w.keys[0]], KindPieeEpoch, challenge.Epoch{CommitSeconds: 12, RevealSeconds: 12}),
		c.entry(outsider, KindPieeOperator, testOperator("matmul")),
		c.entry(w.org, KindPieeOperator, testOperator("matmul")),
		c.entry(w.org, KindPieeOperator, testOperator("matmul")),
		c.entry(w.org, KindPieeOperator, testOperator("sort")),
	}, "missing_reference: no operator", "unauthorized: consortium members", "ok", "replay: published already", "ok")
	c.want([][]byte{
		c.entry(outsider, KindPieeEpoch, challenge.Epoch{CommitSeconds: 12, RevealSeconds: 12}),
		c.entry(w.nodes[w.keys[0]], KindPieeEpoch, challenge.Epoch{CommitSeconds: 5, RevealSeconds: 12}),
		c.entry(w.nodes[w.keys[0]], KindPieeEpoch, challenge.Epoch{CommitSeconds: 12, RevealSeconds: 12}),
		c.entry(w.nodes[w.keys[1]], KindPieeEpoch, challenge.Epoch{CommitSeconds: 12, RevealSeconds: 12}),
	}, "unauthorized: members and registered nodes", "malformed: windows", "ok", "replay: one epoch at a time")
	// Nobody knows the draw before the beacon is published: commits wait.
	c.want([][]byte{c.entry(w.nodes[w.keys[0]], KindPieeCommit, challenge.Commit{Epoch: 1, Node: w.keys[0], Commitment: strings.Repeat("00", 32)})},
		"unavailable: beacon")
	c.block()
	draw := w.draw(1)
	if len(draw) != 4 {
		t.Fatalf("draw: %d challenges, want 4", len(draw))
	}
	liar, down := w.keys[1], w.keys[2]
	good, bad := run("ab"), run("cd")
	result := func(who string) challenge.Run {
		if who == liar {
			return bad
		}
		return good
	}
	var commits [][]byte
	for _, ch := range draw {
		if len(ch.Verifiers) != 3 {
			t.Fatalf("challenge of %s has verifiers %v, want 3", ch.Node, ch.Verifiers)
		}
		for _, who := range append([]string{ch.Node}, ch.Verifiers...) {
			if who == down {
				continue
			}
			k := w.nodes[who]
			commits = append(commits, c.entry(k, KindPieeCommit, challenge.Commit{Epoch: 1, Node: ch.Node,
				Commitment: challenge.Commitment(k.Public().(ed25519.PublicKey), ch.ID, challenge.ResultDigest(result(who)))}))
		}
	}
	ok := make([]string, len(commits))
	for i := range ok {
		ok[i] = "ok"
	}
	c.want(commits, ok...)
	// A commit for a node by a party not drawn for it, and a second commit.
	ch0 := draw[0]
	c.want([][]byte{
		c.entry(outsider, KindPieeCommit, challenge.Commit{Epoch: 1, Node: ch0.Node, Commitment: strings.Repeat("00", 32)}),
		c.entry(w.nodes[ch0.Node], KindPieeCommit, challenge.Commit{Epoch: 1, Node: ch0.Node, Commitment: strings.Repeat("00", 32)}),
		c.entry(w.nodes[ch0.Node], KindPieeCommit, challenge.Commit{Epoch: 2, Node: ch0.Node, Commitment: strings.Repeat("00", 32)}),
	}, "unauthorized: neither", "replay: already committed", "missing_reference: no epoch 2")
	// Reveals before the commit deadline are refused: nothing to copy.
	early := challenge.Sign(w.nodes[ch0.Node], w.statement(1, ch0, result(ch0.Node)))
	c.want([][]byte{c.entry(w.nodes[ch0.Node], KindPieeReveal, early)}, "stale_time: from its commit deadline")
	for !w.pastCommit(1) {
		c.block()
	}
	var reveals [][]byte
	for _, ch := range draw {
		for _, who := range append([]string{ch.Node}, ch.Verifiers...) {
			if who == down {
				continue
			}
			reveals = append(reveals, c.entry(w.nodes[who], KindPieeReveal, challenge.Sign(w.nodes[who], w.statement(1, ch, result(who)))))
		}
	}
	// Attacks on reveals, in one block before the honest ones:
	// a forged signature (signed by another key), a copied answer without
	// a commitment (the down node reveals the honest Q), a reveal that does
	// not open the commitment, and an old challenge's statement.
	forged := challenge.Sign(outsider, w.statement(1, ch0, good))
	copied := challenge.Sign(w.nodes[down], w.statement(1, ch0, good))
	var chLiar challenge.Challenge
	for _, ch := range draw {
		if ch.Node == liar {
			chLiar = ch
		}
	}
	switched := challenge.Sign(w.nodes[liar], w.statement(1, chLiar, good)) // the liar tries to change its answer
	stale := w.statement(1, ch0, good)
	stale.Seed = strings.Repeat("00", 32)
	c.want([][]byte{
		c.entry(w.nodes[ch0.Node], KindPieeReveal, forged),
		c.entry(w.nodes[down], KindPieeReveal, copied),
		c.entry(w.nodes[liar], KindPieeReveal, switched),
		c.entry(w.nodes[ch0.Node], KindPieeReveal, challenge.Sign(w.nodes[ch0.Node], stale)),
	}, "bad_signature: does not verify", "missing_reference: no piee.commit", "malformed: does not open", "malformed: drew")
	ok = make([]string, len(reveals))
	for i := range ok {
		ok[i] = "ok"
	}
	c.want(reveals, ok...)
	c.want([][]byte{reveals[0]}, "replay")
	// Verdicts only after the reveal deadline.
	v0 := w.tallyOf(1, ch0)
	c.want([][]byte{c.entry(w.nodes[w.keys[0]], KindPieeVerdict, v0)}, "stale_time: a verdict comes after")
	for !w.pastReveal(1) {
		c.block()
	}
	// A late reveal, a verdict by an outsider, and a verdict that lies.
	lie := v0
	if lie.Outcome == challenge.Pass {
		lie.Outcome = challenge.Fail
	} else {
		lie.Outcome = challenge.Pass
	}
	lie.Proves = challenge.Proves(lie.Outcome, "software")
	c.want([][]byte{
		c.entry(w.nodes[down], KindPieeReveal, copied),
		c.entry(outsider, KindPieeVerdict, v0),
		c.entry(w.nodes[w.keys[0]], KindPieeVerdict, lie),
	}, "stale_time: reveal deadline", "unauthorized", "malformed: add up to")
	var verdicts [][]byte
	want := map[string]string{}
	for _, ch := range draw {
		v := w.tallyOf(1, ch)
		want[ch.Node] = v.Outcome
		verdicts = append(verdicts, c.entry(w.org, KindPieeVerdict, v))
	}
	c.want(verdicts, "ok", "ok", "ok", "ok")
	c.want([][]byte{verdicts[0]}, "replay")
	for _, n := range w.keys {
		exp := challenge.Pass
		switch n {
		case liar:
			exp = challenge.Fail
		case down:
			exp = challenge.Unavailable
		}
		if want[n] != exp {
			t.Errorf("node %s: %s, want %s", n, want[n], exp)
		}
	}
	if s := w.score(liar); s.Failed != 1 || s.Disagreed != 3 || s.Passed != 0 {
		t.Errorf("liar's score %+v: want 1 failed, 3 disagreed (outvoted as a verifier)", s)
	}
	if s := w.score(down); s.Unavailable != 1 || s.Missed != 3 || s.Failed != 0 {
		t.Errorf("down node's score %+v: want 1 unavailable, 3 missed, no failure", s)
	}
	if s := w.score(w.keys[0]); s.Passed != 1 || s.Verified != 3 {
		t.Errorf("honest node's score %+v: want 1 passed, 3 verified", s)
	}
	// The next epoch may open now; the old epoch's answers replay nowhere.
	c.want([][]byte{
		c.entry(w.nodes[w.keys[0]], KindPieeEpoch, challenge.Epoch{CommitSeconds: 12, RevealSeconds: 12}),
		c.entry(w.nodes[ch0.Node], KindPieeReveal, early),
	}, "ok", "stale_time: reveal deadline")
}

func (w *pieeWorld) epoch(n uint64) *EpochRecord {
	var ep *EpochRecord
	w.c.a.store.view(func(r reader) error {
		ep, _ = getRecord[EpochRecord](blockView{r: r}, bucketPieeEpochs, be64(n))
		return nil
	})
	return ep
}

func (w *pieeWorld) pastCommit(n uint64) bool {
	return w.c.at(w.c.height+1).Unix() >= w.epoch(n).CommitBy
}

func (w *pieeWorld) pastReveal(n uint64) bool {
	return w.c.at(w.c.height+1).Unix() >= w.epoch(n).RevealBy
}

func (w *pieeWorld) tallyOf(n uint64, ch challenge.Challenge) challenge.Verdict {
	var v challenge.Verdict
	w.c.a.store.view(func(r reader) error {
		v = tally(blockView{r: r}, w.epoch(n), ch)
		return nil
	})
	return v
}
