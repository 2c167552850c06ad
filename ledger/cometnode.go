package ledger

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	cfg "github.com/cometbft/cometbft/config"
	cmted25519 "github.com/cometbft/cometbft/crypto/ed25519"
	cmtjson "github.com/cometbft/cometbft/libs/json"
	"github.com/cometbft/cometbft/node"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	cmttypes "github.com/cometbft/cometbft/types"

	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// A ledger home holds one validator: CometBFT's config/ (genesis, node
// key, validator key) and data/ (block store, state, WAL, signing state),
// the application's data/ledger.db, and cloister-ledger.json with the
// settings the ledger needs to start (chain id, addresses, peers). The
// CometBFT configuration itself is built in code from those settings.

const (
	homeConfigFile = "cloister-ledger.json"
	storeFile      = "ledger.db"
)

type homeConfig struct {
	ChainID string `json:"chain_id"`
	// P2PListen is the CometBFT peer address, host:port. Empty (embedded
	// ledgers only: StartValidator wants an address its peers can be
	// told) means 127.0.0.1:0, a port the kernel picks as CometBFT binds
	// it.
	P2PListen string `json:"p2p_listen,omitempty"`
	// APIListen and APIURL are where StartValidator serves the HTTP API.
	APIListen string `json:"api_listen,omitempty"`
	APIURL    string `json:"api_url,omitempty"`
	// P2PExternal is the host:port peers dial, when it is not P2PListen
	// (a Kubernetes Service or load balancer in front of the validator).
	P2PExternal string `json:"p2p_external,omitempty"`
	// PersistentPeers are the other validators, "nodeid@host:port".
	PersistentPeers []string `json:"persistent_peers,omitempty"`
	// Validators is the size of the validator set (tunes timeouts).
	Validators int `json:"validators"`
}

func readHomeConfig(home string) (homeConfig, error) {
	var hc homeConfig
	b, err := os.ReadFile(filepath.Join(home, homeConfigFile))
	if err != nil {
		return hc, fmt.Errorf("ledger home %s: %w", home, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&hc); err != nil {
		return hc, fmt.Errorf("ledger home %s: %s: %w", home, homeConfigFile, err)
	}
	if err := verify.CheckChainID(hc.ChainID); err != nil {
		return hc, fmt.Errorf("ledger home %s: %w", home, err)
	}
	return hc, nil
}

func writeHomeConfig(home string, hc homeConfig) error {
	b, err := json.MarshalIndent(hc, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(home, homeConfigFile), append(b, '\n'), 0o600)
}

// cometConfig is the CometBFT configuration for a home: no RPC server (the
// ledger's HTTP API replaces it), no transaction indexer (the ledger
// indexes its own log), no mempool recheck (the state machine re-judges
// every entry in FinalizeBlock anyway), big mempool, short timeouts, and
// an empty block every emptyBlockInterval so that the last entries get a
// cosigned checkpoint even when no more entries come.
func cometConfig(home string, hc homeConfig) *cfg.Config {
	c := cfg.DefaultConfig()
	c.SetRoot(home)
	c.Moniker = filepath.Base(home)
	c.RPC.ListenAddress = ""
	c.GRPC.ListenAddress = ""
	c.Instrumentation.Prometheus = false
	c.TxIndex.Indexer = "null"
	c.Storage.DiscardABCIResponses = true
	// When blocks are pruned (RetainBlocks), compact the block and state
	// stores every 100 pruned blocks, so that the space comes back then
	// rather than whenever pebble next compacts on its own.
	c.Storage.Compact = true
	c.Storage.CompactionInterval = 100

	c.P2P.ListenAddress = "tcp://" + hc.P2PListen
	c.P2P.PersistentPeers = strings.Join(hc.PersistentPeers, ",")
	c.P2P.ExternalAddress = hc.P2PExternal
	c.P2P.PexReactor = false
	c.P2P.AddrBookStrict = false
	c.P2P.AllowDuplicateIP = true
	c.P2P.FlushThrottleTimeout = 5 * time.Millisecond
	c.P2P.MaxPacketMsgPayloadSize = 16 << 10
	c.P2P.SendRate = 64 << 20
	c.P2P.RecvRate = 64 << 20
	c.P2P.HandshakeTimeout = 5 * time.Second
	c.P2P.DialTimeout = 2 * time.Second

	c.Mempool.Recheck = false
	c.Mempool.Broadcast = hc.Validators > 1
	c.Mempool.Size = 100_000
	c.Mempool.CacheSize = 200_000
	c.Mempool.MaxTxBytes = verify.MaxEntryBytes
	c.Mempool.MaxTxsBytes = 256 << 20
	// Gossip entries to two peers, not all: a third fewer messages to
	// send, receive and deduplicate in a 4-validator chain (measured:
	// 10-40% more entries per second on two cores), and entries still
	// reach the others through forwarding. A validator that no peer
	// forwards to still commits every block; it only proposes fewer
	// entries.
	c.Mempool.ExperimentalMaxGossipConnectionsToPersistentPeers = 2

	cc := c.Consensus
	cc.CreateEmptyBlocks = true
	cc.CreateEmptyBlocksInterval = emptyBlockInterval
	cc.TimeoutCommit = 0
	cc.PeerGossipSleepDuration = 5 * time.Millisecond
	cc.PeerQueryMaj23SleepDuration = 500 * time.Millisecond
	if hc.Validators > 1 {
		cc.TimeoutPropose = 1 * time.Second
		cc.TimeoutProposeDelta = 200 * time.Millisecond
		cc.TimeoutPrevote = 200 * time.Millisecond
		cc.TimeoutPrevoteDelta = 100 * time.Millisecond
		cc.TimeoutPrecommit = 200 * time.Millisecond
		cc.TimeoutPrecommitDelta = 100 * time.Millisecond
	}
	return c
}

// emptyBlockInterval is how long an idle chain waits before an empty
// block, on chains whose block time is BFT time (the median of the last
// commit's vote times, so a block after an idle gap carries the time the
// gap began). Checkpoints do not wait for it (ticks ask for the blocks
// that publish them, tick.go); it keeps block times, which entries' times
// are judged against, within seconds of the clock, and costs an idle
// chain one block per interval. A variable only so that a test can show
// that checkpoints do not wait for it.
var emptyBlockInterval = 5 * time.Second

// idleBlockInterval replaces emptyBlockInterval on chains with
// proposer-based timestamps (every chain genesisDoc makes since decision
// 0157): there a block's time is its proposer's clock, checked by every
// validator to be timely, so the first block after a gap is on time and
// empty blocks keep nothing fresh. One an hour remains, a heartbeat; each
// costs a validator about 100 KB of writes (bbolt pages, CometBFT's
// stores and WAL, its signing state), so the idle chain writes a few MB a
// day instead of 1.7 GB.
var idleBlockInterval = time.Hour

// initHome creates the directories and keys of a validator home, keeping
// keys that already exist.
func initHome(home string) (pub ed25519.PublicKey, nodeID string, err error) {
	c := cfg.DefaultConfig()
	c.SetRoot(home)
	for _, d := range []string{filepath.Join(home, "config"), filepath.Join(home, "data")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, "", err
		}
	}
	nk, err := p2p.LoadOrGenNodeKey(c.NodeKeyFile())
	if err != nil {
		return nil, "", fmt.Errorf("ledger home %s: node key: %w", home, err)
	}
	var pv *privval.FilePV
	if _, err := os.Stat(c.PrivValidatorKeyFile()); err == nil {
		if pv, err = loadFilePV(c); err != nil {
			return nil, "", err
		}
	} else {
		if pv, err = privval.GenFilePV(c.PrivValidatorKeyFile(), c.PrivValidatorStateFile(), nil); err != nil {
			return nil, "", err
		}
		pv.Save()
	}
	return ed25519.PublicKey(pv.Key.PubKey.Bytes()), string(nk.ID()), nil
}

// loadFilePV reads the validator key and signing state, checking both
// files first: privval.LoadFilePV exits the process on a bad file.
func loadFilePV(c *cfg.Config) (*privval.FilePV, error) {
	key, err := readPVKey(c.PrivValidatorKeyFile())
	if err != nil {
		return nil, err
	}
	sf := c.PrivValidatorStateFile()
	if _, err := os.Stat(sf); errors.Is(err, os.ErrNotExist) {
		// A fresh signing state: GenFilePV's zero state, saved.
		pv := privval.NewFilePV(key.PrivKey, c.PrivValidatorKeyFile(), sf)
		pv.LastSignState.Save()
		return pv, nil
	}
	sb, err := os.ReadFile(sf)
	if err != nil {
		return nil, fmt.Errorf("validator signing state: %w", err)
	}
	var st privval.FilePVLastSignState
	if err := cmtjson.Unmarshal(sb, &st); err != nil {
		return nil, fmt.Errorf("validator signing state %s: %w", sf, err)
	}
	return privval.LoadFilePV(c.PrivValidatorKeyFile(), sf), nil
}

// writeGenesis writes the genesis of a chain whose validators have these
// keys (power 1 each) into every home.
func writeGenesis(homes []string, chainID string, pubs []ed25519.PublicKey) error {
	vals := make([]GenesisValidator, len(pubs))
	for i, pub := range pubs {
		vals[i] = GenesisValidator{Name: fmt.Sprintf("v%d", i), PubKey: pub}
	}
	gen, err := genesisDoc(chainID, vals)
	if err != nil {
		return err
	}
	for _, h := range homes {
		c := cfg.DefaultConfig()
		c.SetRoot(h)
		if err := gen.SaveAs(c.GenesisFile()); err != nil {
			return fmt.Errorf("ledger genesis: %w", err)
		}
	}
	return nil
}

// genesisDoc is the genesis of a chain with these validators, power 1
// each: vote extensions from height 1, no gas limit.
func genesisDoc(chainID string, vals []GenesisValidator) (*cmttypes.GenesisDoc, error) {
	params := cmttypes.DefaultConsensusParams()
	params.Feature.VoteExtensionsEnableHeight = 1
	// Proposer-based timestamps: a block's time is its proposer's clock
	// (within the synchrony bounds every validator checks), not the
	// median of the previous votes, so an idle chain needs no empty
	// blocks to keep block times current (decision 0157).
	params.Feature.PbtsEnableHeight = 1
	params.Block.MaxGas = -1
	// A new chain starts with the latest rule version (rules.go); chains
	// whose genesis names none run version 1.
	appState, err := json.Marshal(genesisAppState{RulesVersion: LatestRules})
	if err != nil {
		return nil, err
	}
	gen := &cmttypes.GenesisDoc{
		GenesisTime:     time.Now().UTC(),
		ChainID:         chainID,
		InitialHeight:   1,
		ConsensusParams: params,
		AppState:        appState,
	}
	for _, v := range vals {
		if len(v.PubKey) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("ledger genesis: validator %q: not an Ed25519 public key", v.Name)
		}
		pk := cmted25519.PubKey(v.PubKey)
		gen.Validators = append(gen.Validators, cmttypes.GenesisValidator{
			Address: pk.Address(), PubKey: pk, Power: 1, Name: v.Name,
		})
	}
	if err := gen.ValidateAndComplete(); err != nil {
		return nil, fmt.Errorf("ledger genesis: %w", err)
	}
	return gen, nil
}

// cmtjsonGenesis is the genesis document as CometBFT writes it.
func cmtjsonGenesis(gen *cmttypes.GenesisDoc) ([]byte, error) {
	b, err := cmtjson.MarshalIndent(gen, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("ledger genesis: %w", err)
	}
	return append(b, '\n'), nil
}

// ledgerNode is a running validator: CometBFT node, application, store.
type ledgerNode struct {
	app   *app
	store *store
	node  *node.Node
	home  string
	light *lightSource  // serves GET /v1/light/{height}
	quit  chan struct{} // closed by stop
	loops chan struct{} // closed when the tick loop has returned
}

// nodeOptions are what StartOptions and EmbeddedOptions share.
type nodeOptions struct {
	logger       *slog.Logger
	verbose      bool
	retainBlocks int64
	// snapshotInterval, when positive, takes a snapshot every that many
	// blocks, keeping the last snapshotKeep (snapshot.go).
	snapshotInterval int64
	snapshotKeep     int
	// stateSync, if set, restores a peer's snapshot when the store is
	// empty (statesync.go).
	stateSync *StateSync
}

func startLedgerNode(ctx context.Context, home string, hc homeConfig, o nodeOptions) (*ledgerNode, error) {
	logger := o.logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if hc.P2PListen == "" {
		hc.P2PListen = "127.0.0.1:0"
	}
	c := cometConfig(home, hc)
	gen, err := node.DefaultGenesisDocProviderFunc(c)()
	if err != nil {
		return nil, fmt.Errorf("ledger home %s: %w", home, err)
	}
	if gen.GenesisDoc.ConsensusParams != nil && gen.GenesisDoc.ConsensusParams.Feature.PbtsEnabled(gen.GenesisDoc.InitialHeight) {
		c.Consensus.CreateEmptyBlocksInterval = idleBlockInterval
	}
	if err := c.ValidateBasic(); err != nil {
		return nil, fmt.Errorf("ledger home %s: %w", home, err)
	}
	pv, err := loadFilePV(c)
	if err != nil {
		return nil, fmt.Errorf("ledger home %s: %w", home, err)
	}
	nk, err := p2p.LoadNodeKey(c.NodeKeyFile())
	if err != nil {
		return nil, fmt.Errorf("ledger home %s: node key: %w", home, err)
	}
	st, err := openStore(filepath.Join(c.DBDir(), storeFile))
	if err != nil {
		return nil, err
	}
	a, err := newApp(st, ed25519.PrivateKey(pv.Key.PrivKey.Bytes()), logger)
	if err != nil {
		st.close()
		return nil, err
	}
	a.retainBlocks = max(o.retainBlocks, 0)
	if o.snapshotInterval > 0 || o.stateSync != nil {
		if a.snaps, err = openSnapshots(c.DBDir(), o.snapshotInterval, cmp.Or(o.snapshotKeep, 2)); err != nil {
			st.close()
			return nil, err
		}
	}
	cmtLogger := newCometLogger(logger, o.verbose)
	var opts []node.Option
	if ss := o.stateSync; ss != nil && a.st.Height == 0 {
		sp, err := newLedgerStateProvider(ctx, gen.GenesisDoc, ss, cmtLogger.With("module", "light"))
		if err != nil {
			st.close()
			return nil, fmt.Errorf("ledger home %s: %w", home, err)
		}
		opts = append(opts, node.StateProvider(sp))
		c.StateSync.Enable = true
		c.StateSync.RPCServers = ss.Peers
		c.StateSync.TrustHeight = ss.TrustHeight
		c.StateSync.TrustHash = fmt.Sprintf("%X", ss.TrustHash)
		c.StateSync.DiscoveryTime = 5 * time.Second
	}
	n, err := node.NewNode(ctx, c, pv, nk, clientCreator{a},
		node.DefaultGenesisDocProviderFunc(c), guardedDBProvider(logger),
		node.DefaultMetricsProvider(c.Instrumentation), cmtLogger, opts...)
	if err != nil {
		st.close()
		return nil, fmt.Errorf("ledger home %s: %w", home, err)
	}
	env, err := n.ConfigureRPC()
	if err != nil {
		st.close()
		return nil, fmt.Errorf("ledger home %s: %w", home, err)
	}
	if err := n.Start(); err != nil {
		st.close()
		return nil, fmt.Errorf("ledger home %s: start: %w", home, err)
	}
	ln := &ledgerNode{app: a, store: st, node: n, home: home, quit: make(chan struct{}), loops: make(chan struct{}),
		light: &lightSource{blocks: n.BlockStore(), states: env.StateStore}}
	walDone := make(chan struct{})
	go func() {
		defer close(walDone)
		ln.walLoop(c.Consensus.WalFile(), ln.quit)
	}()
	go func() {
		defer close(ln.loops)
		ln.tickLoop(ln.quit)
		<-walDone
	}()
	return ln, nil
}

// stop stops CometBFT (which waits for the block in progress) and then
// closes the store.
func (ln *ledgerNode) stop() error {
	var errs []error
	close(ln.quit)
	<-ln.loops
	if ln.node.IsRunning() {
		if err := ln.node.Stop(); err != nil {
			errs = append(errs, err)
		}
		ln.node.Wait()
	}
	ln.app.waiters.closeAll(fmt.Errorf("%w: the ledger node stopped before the entry was committed; it may be committed when the node runs again", verify.ErrUnavailable))
	if err := ln.store.close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
