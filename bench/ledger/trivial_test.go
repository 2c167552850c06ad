package ledgerbench

import (
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	cfg "github.com/cometbft/cometbft/config"
	cmtlog "github.com/cometbft/cometbft/libs/log"
	"github.com/cometbft/cometbft/node"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/proxy"
	cmttypes "github.com/cometbft/cometbft/types"

	"github.com/cloisterhq/cloister/internal/loopback"
)

// trivialApp is the CometBFT application that does nothing: every
// transaction is accepted, a block changes no state. Beside the ledger
// (BenchmarkCommit/embedded) it shows what consensus, mempool and block
// store cost on this machine, so that the ledger's own cost per entry is
// what is left.
type trivialApp struct {
	abci.BaseApplication
	height  atomic.Int64
	mu      sync.Mutex
	waiters map[[32]byte]chan struct{}
	pending [][32]byte
}

func (a *trivialApp) FinalizeBlock(_ context.Context, req *abci.FinalizeBlockRequest) (*abci.FinalizeBlockResponse, error) {
	res := make([]*abci.ExecTxResult, len(req.Txs))
	a.pending = a.pending[:0]
	for i, tx := range req.Txs {
		res[i] = &abci.ExecTxResult{Code: abci.CodeTypeOK}
		a.pending = append(a.pending, sha256.Sum256(tx))
	}
	a.height.Store(req.Height)
	return &abci.FinalizeBlockResponse{TxResults: res, AppHash: make([]byte, 8)}, nil
}

func (a *trivialApp) Commit(context.Context, *abci.CommitRequest) (*abci.CommitResponse, error) {
	a.mu.Lock()
	for _, h := range a.pending {
		if ch, ok := a.waiters[h]; ok {
			close(ch)
			delete(a.waiters, h)
		}
	}
	a.mu.Unlock()
	return &abci.CommitResponse{}, nil
}

// startTrivial runs a one-validator CometBFT node with the trivial app,
// configured as the ledger configures its embedded validator (no RPC, no
// indexer, no recheck, commit timeout 0).
func startTrivial(b *testing.B, dir string) (*node.Node, *trivialApp) {
	c := cfg.DefaultConfig()
	c.SetRoot(dir)
	cfg.EnsureRoot(dir)
	c.RPC.ListenAddress = ""
	c.GRPC.ListenAddress = ""
	c.TxIndex.Indexer = "null"
	c.Storage.DiscardABCIResponses = true
	c.Mempool.Recheck = false
	c.Mempool.Broadcast = false
	c.Mempool.Size = 100_000
	c.Mempool.CacheSize = 200_000
	c.Mempool.MaxTxsBytes = 256 << 20
	c.Consensus.TimeoutCommit = 0
	c.Consensus.CreateEmptyBlocks = false
	l, err := loopback.Listen()
	if err != nil {
		b.Fatal(err)
	}
	c.P2P.ListenAddress = "tcp://" + l.Addr().String()
	l.Close()
	pv, err := privval.LoadOrGenFilePV(c.PrivValidatorKeyFile(), c.PrivValidatorStateFile(), nil)
	if err != nil {
		b.Fatal(err)
	}
	nk, err := p2p.LoadOrGenNodeKey(c.NodeKeyFile())
	if err != nil {
		b.Fatal(err)
	}
	pub, _ := pv.GetPubKey()
	params := cmttypes.DefaultConsensusParams()
	params.Block.MaxGas = -1
	gen := &cmttypes.GenesisDoc{ChainID: "trivial", GenesisTime: time.Now().UTC(), InitialHeight: 1, ConsensusParams: params,
		Validators: []cmttypes.GenesisValidator{{Address: pub.Address(), PubKey: pub, Power: 1, Name: "v0"}}}
	if err := gen.ValidateAndComplete(); err != nil {
		b.Fatal(err)
	}
	if err := gen.SaveAs(c.GenesisFile()); err != nil {
		b.Fatal(err)
	}
	app := &trivialApp{waiters: map[[32]byte]chan struct{}{}}
	n, err := node.NewNode(context.Background(), c, pv, nk, proxy.NewLocalClientCreator(app),
		node.DefaultGenesisDocProviderFunc(c), cfg.DefaultDBProvider, node.DefaultMetricsProvider(c.Instrumentation), cmtlog.NewNopLogger())
	if err != nil {
		b.Fatal(err)
	}
	if err := n.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { n.Stop(); n.Wait() })
	return n, app
}

// BenchmarkTrivialApp commits the same 384-byte transactions as
// BenchmarkCommit/embedded/append-c1024 through a CometBFT node whose
// application does nothing; run both in one command to compare CPU per
// entry side by side. append-c1024-batch16 commits the batch-signed
// entries of BenchmarkCommit's -batch16 runs (612 bytes: each carries its
// audit path), so that what CometBFT costs for the longer transactions
// is not counted as the ledger's.
func BenchmarkTrivialApp(b *testing.B) {
	n, app := startTrivial(b, filepath.Join(b.TempDir(), "trivial"))
	s := newSigners(b, 64)
	b.Run("append-c1024", func(b *testing.B) { trivialAppend(b, n, app, s) })
	b.Run("append-c1024-batch16", func(b *testing.B) { trivialAppend(b, n, app, s.batched(16)) })
}

func trivialAppend(b *testing.B, n *node.Node, app *trivialApp, s *signers) {
	entries := s.sign(b, b.N)
	txs := make([][]byte, len(entries))
	for i, e := range entries {
		txs[i] = e.Encode()
	}
	h0 := app.height.Load()
	var next atomic.Int64
	var failed atomic.Value
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	var wg sync.WaitGroup
	for range 1024 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(txs) {
					return
				}
				ch := make(chan struct{})
				app.mu.Lock()
				app.waiters[sha256.Sum256(txs[i])] = ch
				app.mu.Unlock()
				rr, err := n.Mempool().CheckTx(txs[i], "")
				if err == nil {
					rr.Wait()
				}
				if err != nil {
					failed.Store(err)
					return
				}
				select {
				case <-ch:
				case <-time.After(2 * time.Minute):
					failed.Store(errors.New("not committed within 2 minutes"))
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	used := cpuTime() - cpu0
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "entries/s")
	b.ReportMetric(float64(used.Microseconds())/float64(b.N), "cpu-µs/entry")
	if h := app.height.Load(); h > h0 {
		b.ReportMetric(float64(b.N)/float64(h-h0), "entries/block")
	}
}
