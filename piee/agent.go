package piee

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/challenge"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// AgentConfig is how a node takes part in PIEE epochs.
type AgentConfig struct {
	Ledger *lclient.Client
	// Key is the node's registered platform key: it signs the commits,
	// reveals and verdicts, and is the key the ledger checks reveals by.
	Key    ed25519.PrivateKey
	Runner Runner
	Class  string
	// Poll is how often the agent reads the latest epoch (0: 500 ms).
	Poll time.Duration
	// EpochEvery, when not 0, has the agent open an epoch when the last
	// one ended at least this long ago (any participant may; the ledger
	// takes one). CommitSeconds and RevealSeconds are its windows.
	EpochEvery                   time.Duration
	CommitSeconds, RevealSeconds uint64
	// Corrupt makes the node reveal a wrong Q for its own challenges and
	// as a verifier: a fault for demonstrations and tests, which the
	// verdicts must catch.
	Corrupt bool
	Log     *slog.Logger
}

// Agent is a node's part in the epochs.
type Agent struct {
	cfg  AgentConfig
	me   string
	log  *slog.Logger
	mu   sync.Mutex
	work map[roundID]*round
	done map[roundID]bool // verdicts submitted or seen
}

type roundID struct {
	epoch uint64
	node  string
}

type round struct {
	ch        challenge.Challenge
	op        challenge.Operator
	run       challenge.Run
	committed bool
	revealed  bool
	failed    bool
}

// NewAgent checks cfg and makes the agent; Run runs it.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	if cfg.Ledger == nil || cfg.Key == nil || cfg.Runner == nil || cfg.Class == "" {
		return nil, errors.New("piee: an agent needs a ledger, the node's key, its runner and its class")
	}
	if cfg.Poll == 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	if cfg.CommitSeconds == 0 {
		cfg.CommitSeconds = 60
	}
	if cfg.RevealSeconds == 0 {
		cfg.RevealSeconds = 30
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	me := protocol.FormatEd25519Key(cfg.Key.Public().(ed25519.PublicKey))
	return &Agent{cfg: cfg, me: me, log: cfg.Log.With("piee_node", me), work: map[roundID]*round{}, done: map[roundID]bool{}}, nil
}

// Run takes part in epochs until ctx ends. It first runs the operator
// program once on nothing that counts, so that its compiled code is in
// the node's compilation cache before a commit window starts.
func (a *Agent) Run(ctx context.Context) {
	warm := challenge.Operator{Name: "hashchain", ProgramSHA256: ProgramSHA256, Args: []string{"hashchain", "1"},
		Class: challenge.ClassArith, Memory: 32 << 20, TimeoutMS: 120_000}
	start := time.Now()
	if _, err := Execute(ctx, a.cfg.Runner, warm, strings.Repeat("00", 32), a.cfg.Class); err != nil {
		a.log.Warn("piee: warming the operator program failed", "err", err)
	} else {
		a.log.Info("piee: operator program compiled and cached", "took", time.Since(start).Round(time.Millisecond))
	}
	t := time.NewTicker(a.cfg.Poll)
	defer t.Stop()
	for {
		if err := a.step(ctx); err != nil && ctx.Err() == nil {
			a.log.Debug("piee: step", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) step(ctx context.Context) error {
	ep, err := a.cfg.Ledger.PieeEpoch(ctx, 0, nil)
	if errors.Is(err, lclient.ErrNotFound) {
		if a.cfg.EpochEvery > 0 {
			a.openEpoch(ctx)
		}
		return nil
	}
	if err != nil {
		return err
	}
	// Block times lag the clock a little: a node acts on a deadline a
	// margin after it has passed, so the block that judges the entry has
	// passed it too.
	now := time.Now().Add(-deadlineMargin).Unix()
	e := &ep.Epoch
	if now >= e.RevealBy {
		a.verdicts(ctx, ep)
		if a.cfg.EpochEvery > 0 && time.Since(time.Unix(e.RevealBy, 0)) >= a.cfg.EpochEvery {
			a.openEpoch(ctx)
		}
		return nil
	}
	if ep.Draw == nil || !slices.Contains(e.Participants, a.me) {
		return nil
	}
	if time.Now().Unix() < e.CommitBy {
		return a.commit(ctx, ep)
	}
	if now < e.CommitBy {
		return nil
	}
	return a.reveal(ctx, ep)
}

// deadlineMargin is how long after a deadline by its own clock a node
// acts on it having passed.
const deadlineMargin = 2 * time.Second

// final says whether err is a refusal that trying again cannot change
// (anything but a deadline not reached yet, or the ledger unavailable).
func final(err error) bool {
	var rej *verify.RejectedError
	return errors.As(err, &rej) && rej.Code != verify.CodeStaleTime && rej.Code != verify.CodeUnavailable
}

// OpenEpoch submits a piee.epoch entry signed by key (a member's or a
// registered node's).
func OpenEpoch(ctx context.Context, lc *lclient.Client, key ed25519.PrivateKey, e challenge.Epoch) (uint64, error) {
	se, err := verify.NewEntry(key, challenge.KindEpoch, e)
	if err != nil {
		return 0, err
	}
	rc, err := lc.Append(ctx, se)
	return rc.Index, err
}

func (a *Agent) openEpoch(ctx context.Context) {
	if _, err := OpenEpoch(ctx, a.cfg.Ledger, a.cfg.Key, challenge.Epoch{CommitSeconds: a.cfg.CommitSeconds, RevealSeconds: a.cfg.RevealSeconds}); err == nil {
		a.log.Info("piee: opened an epoch")
	}
}

func (a *Agent) append(ctx context.Context, kind string, body any) (uint64, error) {
	se, err := verify.NewEntry(a.cfg.Key, verify.Kind(kind), body)
	if err != nil {
		return 0, err
	}
	rc, err := a.cfg.Ledger.Append(ctx, se)
	return rc.Index, err
}

// commit runs every challenge this node answers or verifies in the epoch
// and commits each result.
func (a *Agent) commit(ctx context.Context, ep *lclient.PieeEpoch) error {
	ops, err := a.cfg.Ledger.PieeOperators(ctx)
	if err != nil {
		return err
	}
	byName := map[string]challenge.Operator{}
	for _, o := range ops.Operators {
		byName[o.Name] = o.Operator
	}
	// Its own challenge first: a late verification costs a vote, a late
	// answer costs the node its round.
	draw := slices.Clone(ep.Draw)
	slices.SortStableFunc(draw, func(x, y challenge.Challenge) int {
		switch {
		case x.Node == a.me:
			return -1
		case y.Node == a.me:
			return 1
		}
		return 0
	})
	for _, ch := range draw {
		if ch.Node != a.me && !slices.Contains(ch.Verifiers, a.me) {
			continue
		}
		id := roundID{ep.Epoch.Number, ch.Node}
		a.mu.Lock()
		r := a.work[id]
		if r == nil {
			r = &round{ch: ch, op: byName[ch.Operator]}
			a.work[id] = r
		}
		a.mu.Unlock()
		if r.committed || r.failed {
			continue
		}
		start := time.Now()
		run, err := Execute(ctx, a.cfg.Runner, r.op, ch.Seed, a.cfg.Class)
		if err != nil {
			r.failed = true
			a.log.Warn("piee: no result for a challenge; it will count as missing", "epoch", id.epoch, "node", ch.Node, "operator", ch.Operator, "err", err)
			continue
		}
		if a.cfg.Corrupt {
			h := sha256.Sum256([]byte("corrupted:" + run.Output))
			run.Output = hex.EncodeToString(h[:])
		}
		r.run = run
		q := challenge.ResultDigest(run)
		if time.Now().Unix() >= ep.Epoch.CommitBy {
			r.failed = true
			a.log.Warn("piee: result ready after the commit deadline", "epoch", id.epoch, "node", ch.Node, "took", time.Since(start))
			continue
		}
		if _, err := a.append(ctx, challenge.KindCommit, challenge.Commit{Epoch: id.epoch, Node: ch.Node,
			Commitment: challenge.Commitment(a.cfg.Key.Public().(ed25519.PublicKey), ch.ID, q)}); err != nil {
			a.log.Warn("piee: commit refused", "epoch", id.epoch, "node", ch.Node, "err", err)
			r.failed = true
			continue
		}
		r.committed = true
		role := "verifier"
		if ch.Node == a.me {
			role = "challenged"
		}
		a.log.Info("piee: committed", "epoch", id.epoch, "role", role, "node", ch.Node, "operator", ch.Operator,
			"outcome", run.Outcome, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// reveal opens every commitment this node made in the epoch.
func (a *Agent) reveal(ctx context.Context, ep *lclient.PieeEpoch) error {
	a.mu.Lock()
	var todo []*round
	for id, r := range a.work {
		if id.epoch == ep.Epoch.Number && r.committed && !r.revealed {
			todo = append(todo, r)
		}
	}
	a.mu.Unlock()
	for _, r := range todo {
		s := challenge.Statement{Epoch: ep.Epoch.Number, Node: r.ch.Node, Challenge: r.ch.ID, Operator: r.ch.Operator,
			Program: r.op.ProgramSHA256, Seed: r.ch.Seed, Result: challenge.ResultDigest(r.run), Run: r.run}
		if _, err := a.append(ctx, challenge.KindReveal, challenge.Sign(a.cfg.Key, s)); err != nil {
			if final(err) {
				r.revealed = true // refused for good: do not try again
			}
			a.log.Warn("piee: reveal refused", "epoch", ep.Epoch.Number, "node", r.ch.Node, "err", err)
			continue
		}
		r.revealed = true
	}
	return nil
}

// verdicts states the verdict of each challenge this node took part in
// that has none yet. The parties of a challenge (the node, then its
// verifiers, by key) take turns a few polls apart, so usually one entry
// is written; a second is refused by the ledger, harmlessly.
func (a *Agent) verdicts(ctx context.Context, ep *lclient.PieeEpoch) {
	have := map[string]bool{}
	for _, se := range ep.Entries {
		if se.Entry.Kind == challenge.KindVerdict {
			if v, err := challenge.DecodeVerdict(se.Entry.Body); err == nil {
				have[v.Node] = true
			}
		}
	}
	results, err := ep.PieeResults()
	if err != nil {
		a.log.Warn("piee: epoch's reveals do not check", "epoch", ep.Epoch.Number, "err", err)
		return
	}
	late := time.Since(time.Unix(ep.Epoch.RevealBy, 0)) - deadlineMargin
	for _, ch := range ep.Draw {
		id := roundID{ep.Epoch.Number, ch.Node}
		parties := append([]string{ch.Node}, ch.Verifiers...)
		turn := slices.Index(parties, a.me)
		if turn < 0 || have[ch.Node] || a.done[id] || late < time.Duration(turn)*3*a.cfg.Poll {
			continue
		}
		v := challenge.Tally(id.epoch, ch, results[ch.Node], ep.Epoch.Class(ch.Node))
		if _, err := a.append(ctx, challenge.KindVerdict, v); err != nil {
			a.done[id] = final(err)
			a.log.Debug("piee: verdict not recorded", "epoch", id.epoch, "node", ch.Node, "err", err)
			continue
		}
		a.done[id] = true
		a.log.Info("piee: verdict", "epoch", id.epoch, "node", ch.Node, "outcome", v.Outcome)
	}
	// Forget old epochs' work.
	a.mu.Lock()
	for id := range a.work {
		if id.epoch+2 < ep.Epoch.Number {
			delete(a.work, id)
		}
	}
	a.mu.Unlock()
}

// Publish publishes the operators (a consortium member's key) that the
// ledger does not have yet, and returns their names.
func Publish(ctx context.Context, lc *lclient.Client, member ed25519.PrivateKey, ops []challenge.Operator) ([]string, error) {
	have, err := lc.PieeOperators(ctx)
	if err != nil {
		return nil, err
	}
	var done []string
	for _, o := range ops {
		if slices.ContainsFunc(have.Operators, func(h lclient.PieeOperator) bool { return h.Name == o.Name }) {
			continue
		}
		se, err := verify.NewEntry(member, challenge.KindOperator, o)
		if err != nil {
			return done, err
		}
		if _, err := lc.Append(ctx, se); err != nil {
			return done, fmt.Errorf("piee: publishing operator %s: %w", o.Name, err)
		}
		done = append(done, o.Name)
	}
	return done, nil
}
