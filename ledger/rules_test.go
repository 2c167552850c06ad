package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	cmtproto "github.com/cometbft/cometbft/api/cometbft/types/v1"
	gogotypes "github.com/cosmos/gogoproto/types"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// abciChain drives the ledger's application as CometBFT does, for a chain
// whose validators' keys are all held here: proposals, vote extensions
// (checkpoint signatures), FinalizeBlock and Commit, with no network and
// no consensus engine, so that a test can replay blocks exactly.
type abciChain struct {
	t        testing.TB
	a        *app
	keys     []ed25519.PrivateKey
	height   int64
	t0       time.Time
	exts     []abci.ExtendedVoteInfo // the last height's vote extensions
	withhold map[string]bool         // validators (by private key) whose extensions carry no VRF share
}

func newABCIChain(t testing.TB, chainID string, appState []byte, keys []ed25519.PrivateKey, t0 time.Time) (*abciChain, error) {
	t.Helper()
	st, err := openStore(filepath.Join(t.TempDir(), storeFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.close() })
	a, err := newApp(st, keys[0], slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	a.now = func() time.Time { return t0 }
	var vals []abci.ValidatorUpdate
	for _, k := range keys {
		vals = append(vals, abci.ValidatorUpdate{PubKeyType: "ed25519", PubKeyBytes: k.Public().(ed25519.PublicKey), Power: 1})
	}
	_, err = a.InitChain(context.Background(), &abci.InitChainRequest{ChainId: chainID, InitialHeight: 1, Time: t0, AppStateBytes: appState,
		ConsensusParams: &cmtproto.ConsensusParams{Feature: &cmtproto.FeatureParams{VoteExtensionsEnableHeight: &gogotypes.Int64Value{Value: 1}}},
		Validators:      vals})
	return &abciChain{t: t, a: a, keys: keys, t0: t0}, err
}

func seedKey(b byte) ed25519.PrivateKey { return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, 32)) }

// at is the time of block h.
func (c *abciChain) at(h int64) time.Time { return c.t0.Add(time.Duration(h) * time.Second) }

// block proposes txs as the next block (with the checkpoint the last
// votes signed), finalizes and commits it, and returns the results.
func (c *abciChain) block(txs ...[]byte) *abci.FinalizeBlockResponse {
	c.t.Helper()
	ctx := context.Background()
	h := c.height + 1
	pp, err := c.a.PrepareProposal(ctx, &abci.PrepareProposalRequest{Height: h, Time: c.at(h), MaxTxBytes: 4 << 20, Txs: txs,
		LocalLastCommit: abci.ExtendedCommitInfo{Votes: c.exts}})
	if err != nil {
		c.t.Fatal(err)
	}
	if pr, err := c.a.ProcessProposal(ctx, &abci.ProcessProposalRequest{Height: h, Time: c.at(h), Txs: pp.Txs}); err != nil || pr.Status != abci.PROCESS_PROPOSAL_STATUS_ACCEPT {
		c.t.Fatalf("height %d: proposal refused (%v)", h, err)
	}
	c.exts = nil
	for _, k := range c.keys {
		// Each validator's vote extension as ExtendVote makes it, checked
		// as VerifyVoteExtension checks it.
		ext := c.a.extend(k)
		if err := c.a.checkExtension(k.Public().(ed25519.PublicKey), ext); err != nil {
			c.t.Fatalf("height %d: own vote extension refused: %v", h, err)
		}
		if c.withhold[string(k)] {
			ext = ext[:ed25519.SignatureSize]
		}
		c.exts = append(c.exts, abci.ExtendedVoteInfo{Validator: abci.Validator{Address: verify.ValidatorAddress(k.Public().(ed25519.PublicKey)), Power: 1},
			VoteExtension: ext, BlockIdFlag: cmtproto.BlockIDFlagCommit})
	}
	return c.finalize(h, c.at(h), pp.Txs)
}

// finalize runs FinalizeBlock and Commit on exactly txs.
func (c *abciChain) finalize(h int64, at time.Time, txs [][]byte) *abci.FinalizeBlockResponse {
	c.t.Helper()
	fb, err := c.a.FinalizeBlock(context.Background(), &abci.FinalizeBlockRequest{Height: h, Time: at, Txs: txs})
	if err != nil {
		c.t.Fatalf("height %d: %v", h, err)
	}
	if _, err := c.a.Commit(context.Background(), &abci.CommitRequest{}); err != nil {
		c.t.Fatal(err)
	}
	c.height = h
	return fb
}

// codes lists the result code of each transaction of a block.
func codes(fb *abci.FinalizeBlockResponse) []uint32 {
	var out []uint32
	for _, r := range fb.TxResults {
		out = append(out, r.Code)
	}
	return out
}

// recordedLog is testdata/rules-v1-log.json (see testdata/README.md).
type recordedLog struct {
	ChainID       string `json:"chain_id"`
	ValidatorSeed string `json:"validator_seed_hex"`
	Blocks        []struct {
		Height  int64    `json:"height"`
		Time    string   `json:"time"`
		Txs     [][]byte `json:"txs"`
		Codes   []uint32 `json:"codes"`
		AppHash []byte   `json:"app_hash"`
		Note    string   `json:"note"`
	} `json:"blocks"`
}

func loadRecordedLog(t *testing.T) *recordedLog {
	t.Helper()
	b, err := os.ReadFile("testdata/rules-v1-log.json")
	if err != nil {
		t.Fatal(err)
	}
	var l recordedLog
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatal(err)
	}
	if len(l.Blocks) < 5 {
		t.Fatalf("the recorded log has %d blocks", len(l.Blocks))
	}
	return &l
}

// replay feeds the recorded blocks to a fresh application with the given
// genesis app_state and returns the height of the first block whose
// results or app hash differ from the record (0 if none).
func replay(t *testing.T, l *recordedLog, appState []byte) (int64, []uint32) {
	t.Helper()
	seed, _ := hex.DecodeString(l.ValidatorSeed)
	t0, _ := time.Parse(time.RFC3339Nano, l.Blocks[0].Time)
	c, err := newABCIChain(t, l.ChainID, appState, []ed25519.PrivateKey{ed25519.NewKeyFromSeed(seed)}, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range l.Blocks {
		at, err := time.Parse(time.RFC3339Nano, b.Time)
		if err != nil {
			t.Fatal(err)
		}
		fb := c.finalize(b.Height, at, b.Txs)
		if got := codes(fb); fmt.Sprint(got) != fmt.Sprint(b.Codes) || !bytes.Equal(fb.AppHash, b.AppHash) {
			return b.Height, got
		}
	}
	return 0, nil
}

// TestReplayRecordedV1Log replays a log that the state machine of the
// first releases judged and recorded (blocks with refused entries among
// them, and a body one level too deep for version 1): a chain whose
// genesis names no version runs version 1 and reaches the same results
// and the same app hash at every height.
func TestReplayRecordedV1Log(t *testing.T) {
	t.Parallel()
	l := loadRecordedLog(t)
	if h, got := replay(t, l, nil); h != 0 {
		t.Fatalf("replaying the recorded log under its own rules diverges at height %d (codes %v)", h, got)
	}
}

// TestReplayUnderNewRulesDiverges shows why rules are versioned: judged
// by version 2 from genesis, the same blocks give another log, from the
// block where version 1 refused a body version 2 takes.
func TestReplayUnderNewRulesDiverges(t *testing.T) {
	t.Parallel()
	l := loadRecordedLog(t)
	h, got := replay(t, l, []byte(`{"rules_version":2}`))
	if h != 4 {
		t.Fatalf("under version 2 the replay diverges at height %d, want 4 (the deep body)", h)
	}
	if fmt.Sprint(got) != "[0 0 0 0]" || fmt.Sprint(l.Blocks[3].Codes) != "[0 0 1 0]" {
		t.Fatalf("height 4: version 2 gives codes %v, version 1 recorded %v", got, l.Blocks[3].Codes)
	}
}

// TestRulesScheduled: validators schedule version 2 on a version-1 chain;
// it turns on at the height they named, once validators holding more than
// two thirds of the power asked for it, and not before.
func TestRulesScheduled(t *testing.T) {
	t.Parallel()
	keys := []ed25519.PrivateKey{seedKey(0x81), seedKey(0x82), seedKey(0x83)}
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	c, err := newABCIChain(t, "rules-test", nil, keys, t0)
	if err != nil {
		t.Fatal(err)
	}
	user := seedKey(0x90)
	nonce := uint64(0)
	entry := func(k ed25519.PrivateKey, kind verify.Kind, body any) []byte {
		nonce++
		se, err := verify.NewEntryWithNonce(k, kind, body, nonce, c.at(c.height+1))
		if err != nil {
			t.Fatal(err)
		}
		return se.Encode()
	}
	deep := func() []byte { // a body version 1 refuses and version 2 takes
		var v any = "leaf"
		for range 40 {
			v = []any{v}
		}
		return entry(user, KindNote, map[string]any{"deep": v})
	}
	member := func() []byte {
		return entry(keys[0], KindMemberAdmitted, map[string]any{"member": protocol.FormatEd25519Key(user.Public().(ed25519.PublicKey))})
	}
	schedule := func(k ed25519.PrivateKey, version, height int64) []byte {
		return entry(k, KindRulesScheduled, map[string]any{"version": version, "height": height})
	}
	want := func(fb *abci.FinalizeBlockResponse, skip int, w ...string) {
		t.Helper()
		for i, code := range w {
			r := fb.TxResults[skip+i]
			if got := codeFromABCI(r.Code); r.Code == 0 && code != "ok" || r.Code != 0 && got != code {
				t.Errorf("height %d tx %d: code %d (%s), want %s", c.height, i, r.Code, r.Log, code)
			}
		}
	}
	const on = 6
	fb := c.block(deep(), member(), schedule(keys[0], 2, on), schedule(user, 2, on), schedule(keys[1], LatestRules+1, on), schedule(keys[2], 2, 2))
	want(fb, 0, verify.CodeMalformed, verify.CodeMalformed, "ok", verify.CodeUnauthorized, verify.CodeMalformed, verify.CodeMalformed)
	fb = c.block(schedule(keys[0], 2, on), schedule(keys[1], 2, on)) // a repeat; 2 of 3 is not more than 2/3
	want(fb, 1, verify.CodeReplay, "ok")
	if got := c.a.schedule(); len(got) != 1 {
		t.Fatalf("scheduled with 2 of 3 validators: %v", got)
	}
	fb = c.block(schedule(keys[2], 2, on)) // 3 of 3
	want(fb, 1, "ok")
	if got := c.a.schedule(); fmt.Sprint(got) != "[{1 1} {6 2}]" {
		t.Fatalf("schedule %v, want version 1 from height 1 and version 2 from height 6", got)
	}
	fb = c.block(deep(), member(), schedule(keys[0], 2, 9)) // height 4: still version 1; version 2 is taken
	want(fb, 1, verify.CodeMalformed, verify.CodeMalformed, verify.CodeReplay)
	fb = c.block(deep()) // height 5
	want(fb, 1, verify.CodeMalformed)
	fb = c.block(deep(), member()) // height 6: version 2
	want(fb, 1, "ok", "ok")
	if c.height != on {
		t.Fatalf("at height %d", c.height)
	}
}

// TestUnknownRuleVersionStops: a binary never judges blocks by rules it
// does not know; it stops, saying to upgrade.
func TestUnknownRuleVersionStops(t *testing.T) {
	t.Parallel()
	if _, err := newABCIChain(t, "future", []byte(`{"rules_version":99}`), []ed25519.PrivateKey{seedKey(1)}, time.Now()); err == nil {
		t.Fatal("a genesis naming rule version 99 was accepted")
	}
	if _, err := newABCIChain(t, "typo", []byte(`{"rule_version":2}`), []ed25519.PrivateKey{seedKey(1)}, time.Now()); err == nil {
		t.Fatal("a genesis app_state with an unknown field was accepted")
	}
	c, err := newABCIChain(t, "upgraded-elsewhere", nil, []ed25519.PrivateKey{seedKey(1)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c.block()
	c.a.mu.Lock()
	c.a.rules = append(c.a.rules, RuleStep{Height: 3, Version: LatestRules + 1})
	c.a.mu.Unlock()
	c.block()
	_, err = c.a.FinalizeBlock(context.Background(), &abci.FinalizeBlockRequest{Height: 3, Time: c.at(3)})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("upgrade")) {
		t.Fatalf("FinalizeBlock under an unknown version: %v", err)
	}
}
