package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/internal/httpguard"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// StartOptions configure StartValidator.
type StartOptions struct {
	// Logger receives the ledger's and CometBFT's errors; nil discards them.
	Logger *slog.Logger
	// Verbose passes CometBFT's info and debug lines to Logger as well.
	Verbose bool
	// APILimits bound the HTTP API's listener (zero fields: defaults).
	APILimits httpguard.Limits
	// RetainBlocks, when positive, prunes CometBFT's blocks older than the
	// last RetainBlocks once a cosigned checkpoint covers their entries
	// (pruning.go); 0 keeps every block. A pruning validator cannot give
	// a validator that joins later the blocks it pruned.
	RetainBlocks int64
	// SnapshotInterval, when positive, takes a snapshot of the ledger's
	// state every that many blocks and offers it to peers that state
	// sync; SnapshotKeep snapshots are kept (default 2). Pruning keeps
	// the blocks from the oldest kept snapshot on.
	SnapshotInterval int64
	SnapshotKeep     int
	// StateSync, if set, makes a validator whose store is empty restore a
	// peer's snapshot instead of replaying every block (decision 0156).
	StateSync *StateSync
}

// Validator is one validator of a multi-validator ledger running in this
// process: CometBFT node, application, and the HTTP API on the address
// stored in its home.
type Validator struct {
	ln        *ledgerNode
	h         http.Handler
	srv       *http.Server
	url       string
	conns     httpguard.Stats
	closeOnce sync.Once
	closeErr  error
}

// StartValidator starts the validator whose home GenerateTestnet (or a
// previous run) prepared: it joins its peers, replays what its store
// lacks, and serves the HTTP API. ctx bounds the start only; the
// validator runs until Close.
func StartValidator(ctx context.Context, home string, opts StartOptions) (*Validator, error) {
	hc, err := readHomeConfig(home)
	if err != nil {
		return nil, err
	}
	if hc.APIListen == "" || hc.P2PListen == "" {
		return nil, fmt.Errorf("ledger home %s: %s names no API or P2P address", home, homeConfigFile)
	}
	lis, err := net.Listen("tcp", hc.APIListen)
	if err != nil {
		return nil, fmt.Errorf("ledger home %s: API address: %w", home, err)
	}
	ln, err := startLedgerNode(ctx, home, hc, nodeOptions{logger: opts.Logger, verbose: opts.Verbose, retainBlocks: opts.RetainBlocks,
		snapshotInterval: opts.SnapshotInterval, snapshotKeep: opts.SnapshotKeep, stateSync: opts.StateSync})
	if err != nil {
		lis.Close()
		return nil, err
	}
	v := &Validator{ln: ln, url: hc.APIURL}
	v.h = validatorMetrics(ln, &v.conns).Serve(ln.handler())
	if v.url == "" {
		v.url = "http://" + lis.Addr().String()
	}
	// The API is public: connections, headers, body pace and responses
	// are bounded like every listener of the project (package httpguard);
	// each endpoint bounds its own body (api.go).
	v.srv = httpguard.NewServer(v.h, opts.APILimits, &v.conns, slog.NewLogLogger(ln.app.logger.Handler(), slog.LevelError))
	go func() {
		if err := v.srv.Serve(httpguard.Listen(lis, opts.APILimits, &v.conns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			ln.app.logger.Error("ledger API server stopped", "err", err)
		}
	}()
	return v, nil
}

// APIURL is the base URL of the validator's HTTP API.
func (v *Validator) APIURL() string { return v.url }

// Handler serves the ledger HTTP API (the same one APIURL serves).
func (v *Validator) Handler() http.Handler { return v.h }

// Append submits the entry through this validator and waits for its
// commit here.
func (v *Validator) Append(ctx context.Context, se *verify.SignedEntry) (verify.Receipt, error) {
	return v.ln.Append(ctx, se)
}

// Close stops the API server (giving requests in flight a few seconds,
// then closing their connections), then the node, then closes the store.
func (v *Validator) Close() error {
	v.closeOnce.Do(func() {
		// net/http counts a connection that never sent a request as busy
		// for its first 5 s; clients' spare connections would fail an
		// orderly stop. Past the grace period, close whatever is left.
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
		defer cancel()
		err := v.srv.Shutdown(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			v.ln.app.logger.Error("ledger API: closing connections still open after the grace period")
			err = v.srv.Close()
		}
		v.closeErr = errors.Join(err, v.ln.stop())
	})
	return v.closeErr
}
