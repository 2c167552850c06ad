package ledger

import (
	"context"
	"runtime"
	"sync"

	abcicli "github.com/cometbft/cometbft/abci/client"
	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/proxy"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// clientCreator connects CometBFT to the application in process: the
// consensus connection through a mutex-serialized client (CometBFT relies
// on its calls being sequential), queries unsynchronized (the app reads
// committed state only), and the mempool through asyncCheckClient.
type clientCreator struct{ app *app }

var _ proxy.ClientCreator = clientCreator{}

func (c clientCreator) NewABCIConsensusClient() (abcicli.Client, error) {
	return abcicli.NewLocalClient(nil, c.app), nil
}

func (c clientCreator) NewABCIMempoolClient() (abcicli.Client, error) {
	return newAsyncCheckClient(c.app), nil
}

func (c clientCreator) NewABCIQueryClient() (abcicli.Client, error) {
	return abcicli.NewUnsyncLocalClient(c.app), nil
}

func (c clientCreator) NewABCISnapshotClient() (abcicli.Client, error) {
	return abcicli.NewUnsyncLocalClient(c.app), nil
}

// asyncCheckClient runs CheckTx on a pool of workers and answers the
// mempool through the request's callback, as a remote ABCI client would.
// The local clients run CheckTx inside the caller, and for transactions
// gossiped by a peer the caller is that peer's connection reader: votes
// and block parts from the peer then wait behind every transaction's
// signature check. Off the reader, consensus messages flow while the
// workers check entries.
//
// CometBFT locks the mempool and calls Flush before it commits a block,
// expecting every CheckTx answer to be in by then (it updates the mempool
// after the commit without further locking against answers). Flush waits
// for the requests in flight, so an answer is never judged against one
// block and delivered after the next.
type asyncCheckClient struct {
	abcicli.Client
	app  *app
	jobs chan *abcicli.ReqRes
	quit chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	mu       sync.Mutex
	idle     *sync.Cond // signalled when inflight drops to 0
	inflight int
}

func newAsyncCheckClient(a *app) *asyncCheckClient {
	c := &asyncCheckClient{
		Client: abcicli.NewUnsyncLocalClient(a),
		app:    a,
		jobs:   make(chan *abcicli.ReqRes, 4096),
		quit:   make(chan struct{}),
	}
	c.idle = sync.NewCond(&c.mu)
	for range checkWorkers {
		c.wg.Add(1)
		go c.work()
	}
	return c
}

func (c *asyncCheckClient) CheckTxAsync(_ context.Context, req *abci.CheckTxRequest) (*abcicli.ReqRes, error) {
	rr := abcicli.NewReqRes(abci.ToCheckTxRequest(req))
	c.mu.Lock()
	c.inflight++
	c.mu.Unlock()
	select {
	case c.jobs <- rr:
	case <-c.quit:
		c.finish(rr, &abci.CheckTxResponse{Code: abciCode(verify.CodeUnavailable), Codespace: abciCodespace, Log: "ledger node stopping"})
	}
	return rr, nil
}

func (c *asyncCheckClient) work() {
	defer c.wg.Done()
	for {
		select {
		case rr := <-c.jobs:
			res, _ := c.app.CheckTx(context.Background(), rr.Request.GetCheckTx())
			c.finish(rr, res)
		case <-c.quit:
			return
		}
	}
}

func (c *asyncCheckClient) finish(rr *abcicli.ReqRes, res *abci.CheckTxResponse) {
	rr.Response = abci.ToCheckTxResponse(res)
	rr.InvokeCallback()
	rr.Done()
	c.mu.Lock()
	if c.inflight--; c.inflight == 0 {
		c.idle.Broadcast()
	}
	c.mu.Unlock()
}

// Flush returns once every CheckTx request made so far is answered.
func (c *asyncCheckClient) Flush(context.Context) error {
	c.mu.Lock()
	for c.inflight > 0 {
		c.idle.Wait()
	}
	c.mu.Unlock()
	return nil
}

// Stop stops the workers, answering queued requests with "unavailable"
// so that no caller waits forever.
func (c *asyncCheckClient) Stop() error {
	err := c.Client.Stop()
	c.once.Do(func() {
		close(c.quit)
		c.wg.Wait()
		for {
			select {
			case rr := <-c.jobs:
				c.finish(rr, &abci.CheckTxResponse{Code: abciCode(verify.CodeUnavailable), Codespace: abciCodespace, Log: "ledger node stopping"})
			default:
				return
			}
		}
	})
	return err
}

// checkWorkers leaves one CPU to consensus and peer traffic: with every
// CPU busy checking signatures, votes and block parts wait for the
// scheduler. On two cores, one worker commits as many entries per second
// as two (one validator, and four in one process), with steadier blocks.
var checkWorkers = max(1, runtime.GOMAXPROCS(0)-1)
