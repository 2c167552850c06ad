package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// app is the ledger's CometBFT application. CometBFT serializes the
// consensus connection (InitChain, PrepareProposal, ProcessProposal,
// ExtendVote, VerifyVoteExtension, FinalizeBlock, Commit); CheckTx and
// Query run concurrently with it and with each other, reading committed
// state only (a bbolt read transaction and the mu-guarded st).
type app struct {
	abci.BaseApplication

	store    *store
	privKey  ed25519.PrivateKey // this node's consensus key; signs checkpoints
	verified *verifiedCache
	waiters  *waiters
	logger   *slog.Logger
	now      func() time.Time

	mu     sync.RWMutex
	st     committedState
	epochs validatorEpochs // the set signing each height; nil before InitChain
	origin string
	rules  ruleSchedule // nil before InitChain

	// withholdVRF makes this validator vote without its VRF shares, as a
	// validator biasing the PIEE beacon would; forgeVRF makes it send
	// shares that do not verify (both set only by tests).
	withholdVRF, forgeVRF atomic.Bool

	// ticks carries the heights after which a tick is wanted (tick.go).
	ticks chan tickRequest

	// snaps keeps this node's snapshots and restores one (snapshot.go);
	// nil: none taken, none restored.
	snaps *snapshots

	// retainBlocks and retained: block pruning (pruning.go; consensus
	// connection only).
	retainBlocks int64
	retained     int64

	// block is the block between FinalizeBlock and Commit (consensus
	// connection only).
	block *pendingBlock
	// checkedCheckpoint is the hash of the last checkpoint transaction
	// this node built or verified, with its note, so that FinalizeBlock
	// does not verify the signatures ProcessProposal just verified
	// (consensus connection only).
	checkedCheckpoint struct {
		hash   [32]byte
		signed []byte
		want   logHead
	}
}

type pendingBlock struct {
	batch    *blockBatch
	state    committedState
	outcomes []txOutcome
	rules    ruleSchedule    // the schedule after the block, if the block changed it
	epochs   validatorEpochs // the signing schedule after the block, if the block changed the set
}

// txOutcome is what became of one transaction of a committed block.
type txOutcome struct {
	hash    [32]byte
	receipt verify.Receipt
	rej     *verify.RejectedError
	err     error // the node stopped before the transaction was committed
}

func newApp(s *store, privKey ed25519.PrivateKey, logger *slog.Logger) (*app, error) {
	a := &app{store: s, privKey: privKey, verified: newVerifiedCache(1 << 15), waiters: newWaiters(),
		logger: logger, now: time.Now, ticks: make(chan tickRequest, 1)}
	if err := a.load(); err != nil {
		return nil, err
	}
	return a, nil
}

// load reads the committed state, the signing schedule and the rules
// from the store (at start, and after restoring a snapshot).
func (a *app) load() error {
	var st committedState
	var ci chainInfo
	var ok bool
	err := a.store.view(func(r reader) error {
		var err error
		if st, err = r.state(); err != nil {
			return err
		}
		if ci, ok, err = r.chain(); err != nil {
			return fmt.Errorf("ledger store: chain info: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	var eps validatorEpochs
	if ok {
		if eps, err = newValidatorEpochs(ci.ChainID, ci.Epochs); err != nil {
			return fmt.Errorf("ledger store: %w", err)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st = st
	if ok {
		a.epochs, a.rules, a.origin = eps, ci.Rules, verify.Origin(ci.ChainID)
	}
	return nil
}

// state returns the committed state and the validator set that signs the
// next block (nil before InitChain).
func (a *app) state() (committedState, *validatorSet) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.st, a.epochs.at(a.st.Height + 1)
}

// setAt returns the validator set that signs blocks, votes and vote
// extensions at height h.
func (a *app) setAt(h int64) *validatorSet {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.epochs.at(h)
}

// schedule returns the committed rule schedule.
func (a *app) schedule() ruleSchedule {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.rules
}

func (a *app) Info(context.Context, *abci.InfoRequest) (*abci.InfoResponse, error) {
	st, _ := a.state()
	res := &abci.InfoResponse{Data: "cloister-ledger", Version: "1", AppVersion: 1, LastBlockHeight: st.Height}
	if st.Height > 0 {
		res.LastBlockAppHash = st.Root[:]
	}
	return res, nil
}

func (a *app) InitChain(_ context.Context, req *abci.InitChainRequest) (*abci.InitChainResponse, error) {
	if req.InitialHeight > 1 {
		return nil, fmt.Errorf("ledger: initial height %d, want 1", req.InitialHeight)
	}
	if cp := req.ConsensusParams; cp == nil || cp.Feature == nil || cp.Feature.VoteExtensionsEnableHeight == nil ||
		cp.Feature.VoteExtensionsEnableHeight.Value != 1 {
		return nil, errors.New("ledger: genesis must enable vote extensions at height 1 (they carry checkpoint signatures)")
	}
	rules, thr, err := readGenesisAppState(req.AppStateBytes)
	if err != nil {
		return nil, err
	}
	ci := chainInfo{ChainID: req.ChainId, Rules: rules, Threshold: thr, GenesisTime: verify.FormatTime(req.Time)}
	for _, v := range req.Validators {
		if v.PubKeyType != "ed25519" || len(v.PubKeyBytes) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("ledger: genesis validator key type %q: checkpoints need Ed25519 validator keys", v.PubKeyType)
		}
		ci.Validators = append(ci.Validators, storedValidator{PubKey: v.PubKeyBytes, Power: v.Power})
	}
	eps, err := newValidatorEpochs(ci.ChainID, []epoch{{From: 1, Validators: ci.Validators}})
	if err != nil {
		return nil, fmt.Errorf("ledger: genesis: %w", err)
	}
	if err := a.store.saveChain(ci); err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.epochs, a.rules, a.origin = eps, rules, verify.Origin(ci.ChainID)
	a.mu.Unlock()
	return &abci.InitChainResponse{AppHash: emptyRoot[:]}, nil
}

func (a *app) CheckTx(_ context.Context, req *abci.CheckTxRequest) (*abci.CheckTxResponse, error) {
	if isTickTx(req.Tx) {
		st, _ := a.state()
		if h, ok := parseTickTx(req.Tx); !ok || h != st.Height {
			return &abci.CheckTxResponse{Code: abciCode(verify.CodeMalformed), Codespace: abciCodespace, Log: "tick not wanted at this height"}, nil
		}
		if _, wanted := a.tickWanted(st); !wanted {
			return &abci.CheckTxResponse{Code: abciCode(verify.CodeMalformed), Codespace: abciCodespace, Log: "tick not wanted at this height"}, nil
		}
		return &abci.CheckTxResponse{Code: abci.CodeTypeOK}, nil
	}
	st, _ := a.state()
	rs, err := a.schedule().rulesAt(st.Height + 1)
	if err != nil {
		return &abci.CheckTxResponse{Code: abciCode(verify.CodeUnavailable), Codespace: abciCodespace, Log: err.Error()}, nil
	}
	h := txKey(req.Tx)
	se, rej := a.decodeVerified(req.Tx, h, rs)
	if rej == nil {
		err := a.store.view(func(r reader) error {
			_, rej = validateEntry(blockView{r: r}, rs, se, 0, st.Height+1, a.now())
			return nil
		})
		if err != nil {
			// Never an error here: the mempool panics on one.
			rej = reject(verify.CodeUnavailable, "ledger store: %v", err)
		}
		// Authority and references may rest on entries still in the
		// mempool (a node's registration, a session's creation), so
		// CheckTx leaves them to FinalizeBlock instead of refusing an
		// entry that the next block may well accept.
		if rej != nil && (rej.Code == verify.CodeUnauthorized || rej.Code == verify.CodeMissingReference) {
			rej = nil
		}
	}
	if rej != nil {
		return &abci.CheckTxResponse{Code: abciCode(rej.Code), Codespace: abciCodespace, Log: rej.Reason}, nil
	}
	a.verified.add(h, se, rs.version)
	return &abci.CheckTxResponse{Code: abci.CodeTypeOK}, nil
}

// decodeVerified decodes tx and checks its signature under rs, or finds
// it in the cache of transactions that already passed both under rs.
func (a *app) decodeVerified(tx []byte, h [32]byte, rs *ruleSet) (*verify.SignedEntry, *verify.RejectedError) {
	if se := a.verified.get(h, rs.version); se != nil {
		return se, nil
	}
	return rs.decode(tx)
}

func (a *app) checkpointOf(size uint64, root tlog.Hash) logHead {
	return logHead{Origin: a.origin, Size: size, Root: root}
}

func (a *app) PrepareProposal(_ context.Context, req *abci.PrepareProposalRequest) (*abci.PrepareProposalResponse, error) {
	st, _ := a.state()
	// The last commit's votes (and extensions) are the previous height's
	// validators'.
	vs := a.setAt(req.Height - 1)
	budget := req.MaxTxBytes
	var out [][]byte
	if req.Height > 1 {
		// The extensions of the last commit signed the log as of the
		// block before it: this node's "previous" state.
		sigs, shares := map[string][]byte{}, map[string][]byte{}
		for _, v := range req.LocalLastCommit.Votes {
			if sig, share, ok := splitExtension(v.VoteExtension); ok {
				sigs[string(v.Validator.Address)] = sig
				if share != nil {
					shares[string(v.Validator.Address)] = share
				}
			}
		}
		signed, err := vs.assembleCheckpoint(a.checkpointOf(st.PrevSize, st.PrevRoot), sigs)
		if err != nil {
			// Other validators will refuse a block without it; say why.
			a.logger.Error("ledger: cannot assemble the checkpoint for the proposal", "height", req.Height, "err", err)
		} else {
			tx := encodeCheckpointTx(signed)
			budget -= protoTxSize(tx)
			out = append(out, tx)
			a.rememberCheckpoint(tx, signed, a.checkpointOf(st.PrevSize, st.PrevRoot))
		}
		if tx := a.beaconTx(vs, shares, req.Time); tx != nil && protoTxSize(tx) <= budget {
			budget -= protoTxSize(tx)
			out = append(out, tx)
		}
	}
	tick := false
	for _, tx := range req.Txs {
		if isCheckpointTx(tx) || isTickTx(tx) && tick {
			continue
		}
		tick = tick || isTickTx(tx)
		sz := protoTxSize(tx)
		if sz > budget {
			break
		}
		budget -= sz
		out = append(out, tx)
	}
	return &abci.PrepareProposalResponse{Txs: out}, nil
}

// protoTxSize is a transaction's size inside a block's Data message.
func protoTxSize(tx []byte) int64 {
	n := int64(len(tx))
	size := int64(1) + n
	for n >= 0x80 {
		size++
		n >>= 7
	}
	return size + 1
}

func (a *app) ProcessProposal(_ context.Context, req *abci.ProcessProposalRequest) (*abci.ProcessProposalResponse, error) {
	st, _ := a.state()
	vs := a.setAt(req.Height - 1)
	refuse := func(format string, args ...any) (*abci.ProcessProposalResponse, error) {
		a.logger.Error("ledger: refusing proposal", "height", req.Height, "reason", fmt.Sprintf(format, args...))
		return &abci.ProcessProposalResponse{Status: abci.PROCESS_PROPOSAL_STATUS_REJECT}, nil
	}
	for i, tx := range req.Txs {
		if isCheckpointTx(tx) && i > 0 {
			return refuse("checkpoint transaction at position %d, only the first may be one", i)
		}
		if _, ok := parseTickTx(tx); isTickTx(tx) && !ok {
			return refuse("malformed tick at position %d", i)
		}
	}
	if req.Height > 1 {
		if len(req.Txs) == 0 || !isCheckpointTx(req.Txs[0]) {
			return refuse("no checkpoint transaction")
		}
		if _, err := a.checkCheckpointTx(vs, req.Txs[0], a.checkpointOf(st.PrevSize, st.PrevRoot)); err != nil {
			return refuse("%v", err)
		}
	}
	return &abci.ProcessProposalResponse{Status: abci.PROCESS_PROPOSAL_STATUS_ACCEPT}, nil
}

func (a *app) ExtendVote(_ context.Context, req *abci.ExtendVoteRequest) (*abci.ExtendVoteResponse, error) {
	st, _ := a.state()
	if req.Height != st.Height+1 {
		// An error here would stop CometBFT; an empty extension only
		// makes this vote count for nothing, which is the truth.
		a.logger.Error("ledger: ExtendVote for a height this node has not reached", "height", req.Height, "committed", st.Height)
		return &abci.ExtendVoteResponse{}, nil
	}
	if a.privKey == nil {
		return &abci.ExtendVoteResponse{}, nil
	}
	return &abci.ExtendVoteResponse{VoteExtension: a.extend(a.privKey)}, nil
}

func (a *app) VerifyVoteExtension(_ context.Context, req *abci.VerifyVoteExtensionRequest) (*abci.VerifyVoteExtensionResponse, error) {
	st, _ := a.state()
	m := a.setAt(req.Height).byAddress(req.ValidatorAddress)
	err := errors.New("not a validator at this height, or not the next height")
	if m != nil && req.Height == st.Height+1 {
		err = a.checkExtension(m.pub, req.VoteExtension)
	}
	if err != nil {
		a.logger.Error("ledger: refusing a vote extension", "height", req.Height, "validator", fmt.Sprintf("%X", req.ValidatorAddress), "reason", err)
		return &abci.VerifyVoteExtensionResponse{Status: abci.VERIFY_VOTE_EXTENSION_STATUS_REJECT}, nil
	}
	return &abci.VerifyVoteExtensionResponse{Status: abci.VERIFY_VOTE_EXTENSION_STATUS_ACCEPT}, nil
}

func (a *app) FinalizeBlock(_ context.Context, req *abci.FinalizeBlockRequest) (*abci.FinalizeBlockResponse, error) {
	st, _ := a.state()
	vs := a.setAt(req.Height - 1) // signed the checkpoint the block carries
	if req.Height != st.Height+1 {
		return nil, fmt.Errorf("ledger: FinalizeBlock at height %d, but the last committed height is %d", req.Height, st.Height)
	}
	rs, err := a.schedule().rulesAt(req.Height)
	if err != nil {
		return nil, err
	}
	hashes, entries, rejs := a.decodeBlock(req.Txs, rs)
	b := &pendingBlock{batch: newBlockBatch(), outcomes: make([]txOutcome, len(req.Txs))}
	results := make([]*abci.ExecTxResult, len(req.Txs))
	next := st
	next.Height = req.Height
	next.PrevSize, next.PrevRoot = st.Size, st.Root
	err = a.store.view(func(r reader) error {
		v := blockView{r: r, batch: b.batch}
		size := st.Size
		// The entry before the next one, read when a batch-signed entry
		// first needs it (its stored form may refer to it, entrystore.go).
		var prev *storedEntry
		for i, tx := range req.Txs {
			out := &b.outcomes[i]
			out.hash = hashes[i]
			if isTickTx(tx) {
				// Nothing to do: the block it asked for is this one.
			} else if isCheckpointTx(tx) {
				out.rej = a.finalizeCheckpoint(v, vs, i, req.Height, tx, st, &next)
			} else if out.rej = rejs[i]; out.rej == nil {
				ws, rej := validateEntry(v, rs, entries[i], size, req.Height, req.Time)
				if out.rej = rej; rej == nil {
					for _, w := range ws {
						b.batch.put(w.bucket, w.key, w.value)
					}
					if prev == nil && size > 0 && entries[i].Batch != nil {
						if p, ok := v.storedEntry(size - 1); ok {
							prev = &p
						}
					}
					val, cur := storedEntryValue(req.Height, tx, entries[i], prev)
					b.batch.put(bucketEntries, be64(size), val)
					prev = &cur
					leaf := out.hash // txKey: the leaf hash
					if err := appendLeaf(v, size, leaf); err != nil {
						return err
					}
					out.receipt = verify.Receipt{Index: size, Height: req.Height, LeafHash: leaf}
					size++
				}
			}
			if out.rej != nil {
				results[i] = &abci.ExecTxResult{Code: abciCode(out.rej.Code), Codespace: abciCodespace, Log: out.rej.Reason}
			} else {
				results[i] = &abci.ExecTxResult{Code: abci.CodeTypeOK}
			}
		}
		root, err := treeRoot(size, v.hashes())
		next.Size, next.Root = size, root
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: block %d: %w", req.Height, err)
	}
	if raw, ok := b.batch.puts[string(bucketMeta)][string(metaRules)]; ok {
		if b.rules, err = parseSchedule(raw); err != nil {
			return nil, fmt.Errorf("ledger: block %d: %w", req.Height, err)
		}
		a.logger.Info("ledger: rule version scheduled", "height", req.Height, "schedule", b.rules)
	}
	res := &abci.FinalizeBlockResponse{TxResults: results, AppHash: next.Root[:]}
	if raw, ok := b.batch.puts[string(bucketMeta)][string(metaValidators)]; ok {
		if res.ValidatorUpdates, b.epochs, err = a.setChange(raw, b.batch.puts[string(bucketMeta)][string(metaEpochs)]); err != nil {
			return nil, fmt.Errorf("ledger: block %d: %w", req.Height, err)
		}
		a.logger.Info("ledger: validator set change decided", "height", req.Height, "effective", req.Height+validatorUpdateDelay, "updates", len(res.ValidatorUpdates))
	}
	b.state = next
	a.block = b
	return res, nil
}

// setChange turns a block's new decided set (raw, JSON) and signing
// schedule into consensus's validator updates and the app's epochs.
func (a *app) setChange(raw, epochsRaw []byte) ([]abci.ValidatorUpdate, validatorEpochs, error) {
	var next []storedValidator
	if err := json.Unmarshal(raw, &next); err != nil {
		return nil, nil, fmt.Errorf("new validator set: %w", err)
	}
	ci, _, err := a.store.loadChain()
	if err != nil {
		return nil, nil, err
	}
	eps, err := parseEpochs(epochsRaw, func() ([]storedValidator, error) {
		return nil, errors.New("a validator set change without its signing schedule")
	})
	if err != nil {
		return nil, nil, err
	}
	ve, err := newValidatorEpochs(ci.ChainID, eps)
	if err != nil {
		return nil, nil, err
	}
	return validatorUpdates(ci.Validators, next), ve, nil
}

// finalizeCheckpoint checks a block's checkpoint transaction and stages
// the checkpoint. ProcessProposal already refused blocks with a bad one;
// this check covers blocks this node did not vote on (catching up).
func (a *app) finalizeCheckpoint(v blockView, vs *validatorSet, pos int, height int64, tx []byte, st committedState, next *committedState) *verify.RejectedError {
	if pos != 0 || height < 2 {
		return reject(verify.CodeMalformed, "checkpoint transaction out of place")
	}
	want := a.checkpointOf(st.PrevSize, st.PrevRoot)
	signed, err := a.checkCheckpointTx(vs, tx, want)
	if err != nil {
		a.logger.Error("ledger: committed block carries an invalid checkpoint", "height", height, "err", err)
		return reject(verify.CodeMalformed, "%v", err)
	}
	if v.get(bucketCheckpoints, be64(want.Size)) == nil {
		v.batch.put(bucketCheckpoints, be64(want.Size), bytes.Clone(signed))
	}
	next.CheckpointSize, next.HasCheckpoint = want.Size, true
	return nil
}

// checkCheckpointTx is vs.parseCheckpointTx, remembering the last
// transaction it accepted.
func (a *app) checkCheckpointTx(vs *validatorSet, tx []byte, want logHead) ([]byte, error) {
	h := sha256.Sum256(tx)
	if c := &a.checkedCheckpoint; c.signed != nil && c.hash == h && c.want == want {
		return c.signed, nil
	}
	signed, err := vs.parseCheckpointTx(tx, want)
	if err == nil {
		a.rememberCheckpoint(tx, signed, want)
	}
	return signed, err
}

func (a *app) rememberCheckpoint(tx, signed []byte, want logHead) {
	a.checkedCheckpoint.hash = sha256.Sum256(tx)
	a.checkedCheckpoint.signed = signed
	a.checkedCheckpoint.want = want
}

// preverify decodes and verifies a batch of transactions under the rules
// of the next block, spread over the CPUs, and remembers those that pass:
// CheckTx, which takes a batch's entries one at a time and in order, then
// finds their signatures checked and does only the state's checks, so a
// batch reaches the mempool at once and fills blocks. Nothing is decided
// here; a transaction that fails is judged again (and refused) by CheckTx.
func (a *app) preverify(txs [][]byte) {
	st, _ := a.state()
	rs, err := a.schedule().rulesAt(st.Height + 1)
	if err != nil {
		return
	}
	hashes, entries, _ := a.decodeBlock(txs, rs)
	for i, se := range entries {
		if se != nil {
			a.verified.add(hashes[i], se, rs.version)
		}
	}
}

// txKey is what the block, the CheckTx cache and Append's waiters know a
// transaction by: its leaf hash, so that a block hashes each transaction
// once (for the cache, the tree and the receipt).
func txKey(tx []byte) [32]byte { return verify.LeafHash(tx) }

// decodeBlock decodes and verifies a block's entry transactions, using the
// CheckTx cache and spreading cache misses over the CPUs.
func (a *app) decodeBlock(txs [][]byte, rs *ruleSet) ([][32]byte, []*verify.SignedEntry, []*verify.RejectedError) {
	hashes := make([][32]byte, len(txs))
	entries := make([]*verify.SignedEntry, len(txs))
	rejs := make([]*verify.RejectedError, len(txs))
	var miss []int
	for i, tx := range txs {
		hashes[i] = txKey(tx)
		if isCheckpointTx(tx) || isTickTx(tx) {
			continue
		}
		if se := a.verified.get(hashes[i], rs.version); se != nil {
			entries[i] = se
		} else {
			miss = append(miss, i)
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(miss)/16+1)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := w; j < len(miss); j += workers {
				i := miss[j]
				entries[i], rejs[i] = rs.decode(txs[i])
			}
		}()
	}
	wg.Wait()
	return hashes, entries, rejs
}

func (a *app) Commit(context.Context, *abci.CommitRequest) (*abci.CommitResponse, error) {
	b := a.block
	if b == nil {
		return nil, errors.New("ledger: Commit without FinalizeBlock")
	}
	if err := a.store.commit(b.batch, b.state); err != nil {
		return nil, fmt.Errorf("ledger: commit block %d: %w", b.state.Height, err)
	}
	a.mu.Lock()
	a.st = b.state
	if b.rules != nil {
		a.rules = b.rules
	}
	if b.epochs != nil {
		a.epochs = b.epochs
	}
	a.mu.Unlock()
	a.block = nil
	a.verified.forget(b.outcomes)
	a.waiters.notify(b.outcomes)
	if d, ok := a.tickWanted(b.state); ok {
		a.signalTick(b.state.Height, d)
	}
	if a.snaps.due(b.state.Height) {
		a.snaps.take(a.store, b.state.Height, func(err error) { a.logger.Error("ledger: snapshot not taken", "err", err) })
	}
	return &abci.CommitResponse{RetainHeight: a.retainHeight(b.state)}, nil
}

func (a *app) Query(_ context.Context, req *abci.QueryRequest) (*abci.QueryResponse, error) {
	if req.Path != "/status" {
		return &abci.QueryResponse{Code: 1, Log: "unknown query path; the ledger answers /status and serves the rest over its HTTP API"}, nil
	}
	st, vs := a.state()
	s := statusJSON{Height: st.Height, Size: st.Size, Root: st.Root[:]}
	if vs != nil {
		s.ChainID = vs.chainID
	}
	if st.HasCheckpoint {
		s.CheckpointSize = &st.CheckpointSize
	}
	b, _ := json.Marshal(s.withRules(a.schedule(), st.Height))
	return &abci.QueryResponse{Value: b, Height: st.Height}, nil
}

// verifiedCache remembers entries whose decoding and signature CheckTx
// already checked, and under which rule version, so FinalizeBlock does not
// verify them again under the same rules. The result is the same either
// way; the cache only saves time. Bounded: when full it starts over.
type verifiedCache struct {
	mu  sync.Mutex
	m   map[[32]byte]verifiedEntry
	max int
}

type verifiedEntry struct {
	se      *verify.SignedEntry
	version int
}

func newVerifiedCache(max int) *verifiedCache {
	return &verifiedCache{m: map[[32]byte]verifiedEntry{}, max: max}
}

// get returns the entry with transaction hash h if it was checked under
// rule version v.
func (c *verifiedCache) get(h [32]byte, v int) *verify.SignedEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[h]; ok && e.version == v {
		return e.se
	}
	return nil
}

func (c *verifiedCache) add(h [32]byte, se *verify.SignedEntry, v int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[h] = verifiedEntry{se, v}
}

func (c *verifiedCache) forget(outs []txOutcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range outs {
		delete(c.m, o.hash)
	}
}

// waiters lets Append wait for the commit of its transaction.
type waiters struct {
	mu sync.Mutex
	m  map[[32]byte][]chan txOutcome
}

func newWaiters() *waiters { return &waiters{m: map[[32]byte][]chan txOutcome{}} }

func (w *waiters) add(h [32]byte) chan txOutcome {
	ch := make(chan txOutcome, 1)
	w.mu.Lock()
	w.m[h] = append(w.m[h], ch)
	w.mu.Unlock()
	return ch
}

func (w *waiters) remove(h [32]byte, ch chan txOutcome) {
	w.mu.Lock()
	defer w.mu.Unlock()
	list := w.m[h]
	for i, c := range list {
		if c == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(w.m, h)
	} else {
		w.m[h] = list
	}
}

// closeAll tells every waiter that no outcome will come.
func (w *waiters) closeAll(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for h, list := range w.m {
		for _, ch := range list {
			select {
			case ch <- txOutcome{hash: h, err: err}:
			default:
			}
		}
		delete(w.m, h)
	}
}

func (w *waiters) notify(outs []txOutcome) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.m) == 0 {
		return
	}
	for _, o := range outs {
		for _, ch := range w.m[o.hash] {
			select {
			case ch <- o:
			default:
			}
		}
		delete(w.m, o.hash)
	}
}
