package ledger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	cmtstate "github.com/cometbft/cometbft/api/cometbft/state/v1"
	cmtproto "github.com/cometbft/cometbft/api/cometbft/types/v1"
	"github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/light"
	lightprovider "github.com/cometbft/cometbft/light/provider"
	lightdb "github.com/cometbft/cometbft/light/store/db"
	sm "github.com/cometbft/cometbft/state"
	cmtstore "github.com/cometbft/cometbft/store"
	cmttypes "github.com/cometbft/cometbft/types"
	cmttime "github.com/cometbft/cometbft/types/time"
	"github.com/cometbft/cometbft/version"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// State sync without CometBFT's RPC (decision 0156). CometBFT's state
// sync asks a StateProvider for the app hash, commit and consensus state
// at a snapshot's height; its own provider runs a light client over
// CometBFT's RPC servers. The ledger serves no CometBFT RPC (its HTTP API
// replaces it), so validators serve the light client the one thing it
// needs — a signed header with its validator set, and the consensus
// parameters of that height — at GET /v1/light/{height}, and a joining
// node runs CometBFT's light client over those answers: it starts from the
// trust root its operator gives (a height and header hash) and verifies
// every later header by the validators' signatures, cross-checking the
// primary against witnesses. Nothing a peer serves is taken on its word.

// StateSync configures a node that starts with an empty store to restore a
// peer's snapshot instead of replaying blocks from genesis.
type StateSync struct {
	// Peers are the ledger API URLs of validators to verify headers
	// from: the first is the light client's primary, the others its
	// witnesses (at least one).
	Peers []string
	// TrustHeight and TrustHash are the trust root: a block height and
	// its header hash, from a source the operator trusts (its own
	// organisation's validator, say). Must be within TrustPeriod.
	TrustHeight int64
	TrustHash   []byte
	// TrustPeriod is how long a validator set is trusted after a header
	// it signed (default one week).
	TrustPeriod time.Duration
}

func (s *StateSync) check() error {
	switch {
	case len(s.Peers) < 2:
		return errors.New("state sync: give at least two peers (a primary and a witness)")
	case s.TrustHeight <= 0 || len(s.TrustHash) != 32:
		return errors.New("state sync: a trust height and a 32-byte header hash are needed (package ledger/trustroot derives them from the pinned genesis)")
	}
	return nil
}

// lightJSON is the answer of GET /v1/light/{height}.
type lightJSON struct {
	// LightBlock is CometBFT's LightBlock, protobuf.
	LightBlock []byte `json:"light_block"`
	// ConsensusParams are the consensus parameters of that height,
	// protobuf; their hash is the header's consensus hash.
	ConsensusParams []byte `json:"consensus_params"`
	// Latest is the last height this validator has.
	Latest int64 `json:"latest"`
}

// maxLightBytes bounds a light block answer (maxValidators validators).
const maxLightBytes = 1 << 20

// lightSource reads light blocks from a running node's stores.
type lightSource struct {
	blocks *cmtstore.BlockStore
	states sm.Store
}

func (ln *ledgerNode) handleLight(w http.ResponseWriter, r *http.Request) {
	h, err := strconv.ParseInt(r.PathValue("height"), 10, 64)
	if err != nil || h < 0 {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "height: want a block height, or 0 for the latest")
		return
	}
	src := ln.light
	if src == nil {
		writeError(w, http.StatusServiceUnavailable, verify.CodeUnavailable, "this node serves no light blocks")
		return
	}
	latest := src.blocks.Height()
	if h == 0 {
		h = latest
	}
	if h > latest || h < src.blocks.Base() || h < 1 {
		writeError(w, http.StatusNotFound, verify.CodeNotFound, "no block %d here: this node holds %d to %d", h, src.blocks.Base(), latest)
		return
	}
	lb, params, err := src.lightBlock(h)
	if err != nil {
		writeError(w, http.StatusNotFound, verify.CodeNotFound, "block %d: %v", h, err)
		return
	}
	writeJSON(w, http.StatusOK, lightJSON{LightBlock: lb, ConsensusParams: params, Latest: latest})
}

func (s *lightSource) lightBlock(h int64) (lb, params []byte, err error) {
	meta := s.blocks.LoadBlockMeta(h)
	if meta == nil {
		return nil, nil, errors.New("pruned")
	}
	var commit *cmttypes.Commit
	if h == s.blocks.Height() {
		commit = s.blocks.LoadSeenCommit(h)
	} else {
		commit = s.blocks.LoadBlockCommit(h)
	}
	vals, err := s.states.LoadValidators(h)
	if err != nil || commit == nil {
		return nil, nil, fmt.Errorf("no commit or validators (%v)", err)
	}
	cp, err := s.states.LoadConsensusParams(h)
	if err != nil {
		return nil, nil, err
	}
	pb, err := (&cmttypes.LightBlock{SignedHeader: &cmttypes.SignedHeader{Header: &meta.Header, Commit: commit}, ValidatorSet: vals}).ToProto()
	if err != nil {
		return nil, nil, err
	}
	if lb, err = pb.Marshal(); err != nil {
		return nil, nil, err
	}
	cpb := cp.ToProto()
	params, err = cpb.Marshal()
	return lb, params, err
}

// apiLightProvider is a light client provider over a validator's
// GET /v1/light/{height}.
type apiLightProvider struct {
	chainID string
	base    string
	hc      *http.Client

	mu     sync.Mutex
	params map[int64][]byte // consensus parameters seen, by height
}

func newAPILightProvider(chainID, base string) *apiLightProvider {
	return &apiLightProvider{chainID: chainID, base: strings.TrimRight(base, "/"),
		hc: &http.Client{Timeout: 10 * time.Second}, params: map[int64][]byte{}}
}

func (p *apiLightProvider) ChainID() string { return p.chainID }
func (p *apiLightProvider) String() string  { return p.base }

func (p *apiLightProvider) fetch(ctx context.Context, h int64) (*lightJSON, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/v1/light/%d", p.base, h), nil)
	if err != nil {
		return nil, err
	}
	res, err := p.hc.Do(req)
	if err != nil {
		return nil, lightprovider.ErrNoResponse
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxLightBytes+1))
	if err != nil || len(body) > maxLightBytes {
		return nil, lightprovider.ErrBadLightBlock{Reason: errors.New("answer unreadable or over 1 MiB")}
	}
	if res.StatusCode == http.StatusNotFound {
		return nil, lightprovider.ErrLightBlockNotFound
	}
	if res.StatusCode != http.StatusOK {
		return nil, lightprovider.ErrNoResponse
	}
	var lj lightJSON
	if err := json.Unmarshal(body, &lj); err != nil {
		return nil, lightprovider.ErrBadLightBlock{Reason: err}
	}
	return &lj, nil
}

func (p *apiLightProvider) LightBlock(ctx context.Context, h int64) (*cmttypes.LightBlock, error) {
	lj, err := p.fetch(ctx, h)
	if err != nil {
		return nil, err
	}
	var pb cmtproto.LightBlock
	if err := pb.Unmarshal(lj.LightBlock); err != nil {
		return nil, lightprovider.ErrBadLightBlock{Reason: err}
	}
	lb, err := cmttypes.LightBlockFromProto(&pb)
	if err != nil {
		return nil, lightprovider.ErrBadLightBlock{Reason: err}
	}
	if err := lb.ValidateBasic(p.chainID); err != nil {
		return nil, lightprovider.ErrBadLightBlock{Reason: err}
	}
	if h != 0 && lb.Height != h {
		return nil, lightprovider.ErrBadLightBlock{Reason: fmt.Errorf("asked for height %d, got %d", h, lb.Height)}
	}
	p.mu.Lock()
	if len(p.params) > 64 {
		clear(p.params)
	}
	p.params[lb.Height] = lj.ConsensusParams
	p.mu.Unlock()
	return lb, nil
}

// ReportEvidence: the ledger's light client does not submit evidence;
// a node that sees a conflicting header stops state sync.
func (p *apiLightProvider) ReportEvidence(context.Context, cmttypes.Evidence) error { return nil }

// consensusParams returns the parameters served with the light block of
// height h, if their hash is the verified header's consensus hash.
func (p *apiLightProvider) consensusParams(h int64, want []byte) (cmttypes.ConsensusParams, error) {
	p.mu.Lock()
	raw := p.params[h]
	p.mu.Unlock()
	var pb cmtproto.ConsensusParams
	if raw == nil {
		return cmttypes.ConsensusParams{}, fmt.Errorf("no consensus parameters for height %d", h)
	}
	if err := pb.Unmarshal(raw); err != nil {
		return cmttypes.ConsensusParams{}, err
	}
	cp := cmttypes.ConsensusParamsFromProto(pb)
	if !bytes.Equal(cp.Hash(), want) {
		return cmttypes.ConsensusParams{}, fmt.Errorf("the consensus parameters served for height %d are not the header's", h)
	}
	return cp, nil
}

// ledgerStateProvider is CometBFT's state provider over the light client.
type ledgerStateProvider struct {
	mu            sync.Mutex
	lc            *light.Client
	providers     map[lightprovider.Provider]*apiLightProvider
	initialHeight int64
}

func newLedgerStateProvider(ctx context.Context, gen *cmttypes.GenesisDoc, ss *StateSync, logger log.Logger) (*ledgerStateProvider, error) {
	if err := ss.check(); err != nil {
		return nil, err
	}
	period := ss.TrustPeriod
	if period <= 0 {
		period = 7 * 24 * time.Hour
	}
	sp := &ledgerStateProvider{providers: map[lightprovider.Provider]*apiLightProvider{}, initialHeight: max(gen.InitialHeight, 1)}
	var ps []lightprovider.Provider
	for _, u := range ss.Peers {
		p := newAPILightProvider(gen.ChainID, u)
		sp.providers[p] = p
		ps = append(ps, p)
	}
	lc, err := light.NewClient(ctx, gen.ChainID, light.TrustOptions{Period: period, Height: ss.TrustHeight, Hash: ss.TrustHash},
		ps[0], ps[1:], lightdb.New(dbm.NewMemDB(), ""), light.Logger(logger), light.MaxRetryAttempts(5))
	if err != nil {
		return nil, fmt.Errorf("state sync: light client: %w", err)
	}
	sp.lc = lc
	return sp, nil
}

func (s *ledgerStateProvider) AppHash(ctx context.Context, height uint64) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// The app hash after height is in the header of height+1; the
	// headers up to height+2 are needed for the state, so wait for them.
	lb, err := s.lc.VerifyLightBlockAtHeight(ctx, int64(height+1), cmttime.Now())
	if err != nil {
		return nil, err
	}
	if _, err := s.lc.VerifyLightBlockAtHeight(ctx, int64(height+2), cmttime.Now()); err != nil {
		return nil, err
	}
	return lb.AppHash, nil
}

func (s *ledgerStateProvider) Commit(ctx context.Context, height uint64) (*cmttypes.Commit, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lb, err := s.lc.VerifyLightBlockAtHeight(ctx, int64(height), cmttime.Now())
	if err != nil {
		return nil, err
	}
	return lb.Commit, nil
}

// State builds the consensus state after height from the verified
// headers of height, height+1 and height+2, as CometBFT's own provider.
func (s *ledgerStateProvider) State(ctx context.Context, height uint64) (sm.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lbs [3]*cmttypes.LightBlock
	for i := range lbs {
		lb, err := s.lc.VerifyLightBlockAtHeight(ctx, int64(height)+int64(i), cmttime.Now())
		if err != nil {
			return sm.State{}, err
		}
		lbs[i] = lb
	}
	last, cur, next := lbs[0], lbs[1], lbs[2]
	p := s.providers[s.lc.Primary()]
	if p == nil {
		return sm.State{}, errors.New("state sync: unknown primary")
	}
	if _, err := p.LightBlock(ctx, cur.Height); err != nil {
		return sm.State{}, err
	}
	cp, err := p.consensusParams(cur.Height, cur.ConsensusHash)
	if err != nil {
		return sm.State{}, err
	}
	return sm.State{
		ChainID:                          s.lc.ChainID(),
		InitialHeight:                    s.initialHeight,
		Version:                          cmtstate.Version{Consensus: cur.Version, Software: version.CMTSemVer},
		LastBlockHeight:                  last.Height,
		LastBlockTime:                    last.Time,
		LastBlockID:                      last.Commit.BlockID,
		AppHash:                          cur.AppHash,
		LastResultsHash:                  cur.LastResultsHash,
		LastValidators:                   last.ValidatorSet,
		Validators:                       cur.ValidatorSet,
		NextValidators:                   next.ValidatorSet,
		LastHeightValidatorsChanged:      next.Height,
		ConsensusParams:                  cp,
		LastHeightConsensusParamsChanged: cur.Height,
	}, nil
}
