package ledger

import (
	"context"
	"runtime"
	"sync"

	abcicli "github.com/cometbft/cometbft/abci/client"
	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/proxy"
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
// signature check. Off the reader, consensus messages flow while entries
// are checked on all CPUs.
type asyncCheckClient struct {
	abcicli.Client
	app  *app
	jobs chan *abcicli.ReqRes
	quit chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func newAsyncCheckClient(a *app) *asyncCheckClient {
	c := &asyncCheckClient{
		Client: abcicli.NewUnsyncLocalClient(a),
		app:    a,
		jobs:   make(chan *abcicli.ReqRes, 4096),
		quit:   make(chan struct{}),
	}
	for range checkWorkers {
		c.wg.Add(1)
		go c.work()
	}
	return c
}

func (c *asyncCheckClient) CheckTxAsync(_ context.Context, req *abci.CheckTxRequest) (*abcicli.ReqRes, error) {
	rr := abcicli.NewReqRes(abci.ToCheckTxRequest(req))
	select {
	case c.jobs <- rr:
	case <-c.quit:
		c.finish(rr, &abci.CheckTxResponse{Code: abciCode(CodeUnavailable), Codespace: abciCodespace, Log: "ledger node stopping"})
	}
	return rr, nil
}

func (c *asyncCheckClient) work() {
	defer c.wg.Done()
	for {
		select {
		case rr := <-c.jobs:
			// Judge and answer under answerMu (see app.answerMu).
			c.app.answerMu.RLock()
			res, _ := c.app.CheckTx(context.Background(), rr.Request.GetCheckTx())
			c.finish(rr, res)
			c.app.answerMu.RUnlock()
		case <-c.quit:
			return
		}
	}
}

func (c *asyncCheckClient) finish(rr *abcicli.ReqRes, res *abci.CheckTxResponse) {
	rr.Response = abci.ToCheckTxResponse(res)
	rr.InvokeCallback()
	rr.Done()
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
				c.finish(rr, &abci.CheckTxResponse{Code: abciCode(CodeUnavailable), Codespace: abciCodespace, Log: "ledger node stopping"})
			default:
				return
			}
		}
	})
	return err
}

// checkWorkers leaves one CPU to consensus and peer traffic: with every
// CPU busy checking signatures, votes and block parts wait for the
// scheduler and blocks take longer than the checks save (measured: four
// validators on two cores commit 10-30% more entries per second with one
// worker than with two; one validator is no slower).
var checkWorkers = max(1, runtime.GOMAXPROCS(0)-1)
