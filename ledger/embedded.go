package ledger

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// EmbeddedOptions configure OpenEmbedded.
type EmbeddedOptions struct {
	// ChainID names a new ledger (default "cloister-embedded-<8 random hex>").
	// When reopening, it must be empty or equal to the stored one.
	ChainID string
	// Logger receives the ledger's and CometBFT's errors; nil discards them.
	Logger *slog.Logger
	// Verbose passes CometBFT's info and debug lines to Logger as well.
	Verbose bool
	// RetainBlocks, when positive, prunes CometBFT's blocks older than the
	// last RetainBlocks once a cosigned checkpoint covers their entries
	// (pruning.go); 0 keeps every block.
	RetainBlocks int64
}

// Embedded is a single-validator ledger running inside the calling
// process: a real CometBFT node (no peers, no RPC server) and the ledger
// application, with all data under one directory. It implements Appender
// and serves the HTTP API through Handler. Checkpoints are signed by the
// one validator, so they prove consistency over time to clients that pin
// its key, not agreement among independent parties.
type Embedded struct {
	ln        *ledgerNode
	h         http.Handler
	closeOnce sync.Once
	closeErr  error
}

// OpenEmbedded opens (creating on first use) the embedded ledger in dir:
// keys and genesis are generated the first time; later opens resume the
// same chain, CometBFT replaying any block the store had not committed.
// ctx bounds the opening only; the ledger runs until Close. One process
// at a time may open a directory.
func OpenEmbedded(ctx context.Context, dir string, opts EmbeddedOptions) (*Embedded, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded ledger: %w", err)
	}
	hc, err := readHomeConfig(dir)
	switch {
	case err == nil:
		if opts.ChainID != "" && opts.ChainID != hc.ChainID {
			return nil, fmt.Errorf("embedded ledger %s: holds chain %q, not %q", dir, hc.ChainID, opts.ChainID)
		}
		if hc.Validators != 1 {
			return nil, fmt.Errorf("embedded ledger %s: the home is one of %d validators; start it with StartValidator", dir, hc.Validators)
		}
	case errors.Is(err, os.ErrNotExist):
		if hc, err = initEmbedded(dir, opts.ChainID); err != nil {
			return nil, fmt.Errorf("embedded ledger %s: %w", dir, err)
		}
	default:
		return nil, err
	}
	// Embedded ledgers have no peers: CometBFT still listens for them, on
	// a port the kernel picks as it binds (a port chosen beforehand could
	// be taken by someone else before CometBFT binds it).
	hc.P2PListen = ""
	ln, err := startLedgerNode(ctx, dir, hc, nodeOptions{logger: opts.Logger, verbose: opts.Verbose, retainBlocks: opts.RetainBlocks})
	if err != nil {
		return nil, fmt.Errorf("embedded ledger: %w", err)
	}
	return &Embedded{ln: ln, h: ln.handler()}, nil
}

func initEmbedded(dir, chainID string) (homeConfig, error) {
	if chainID == "" {
		var b [4]byte
		rand.Read(b[:])
		chainID = "cloister-embedded-" + hex.EncodeToString(b[:])
	}
	if err := verify.CheckChainID(chainID); err != nil {
		return homeConfig{}, err
	}
	if _, err := os.Stat(filepath.Join(dir, "data", storeFile)); err == nil {
		return homeConfig{}, fmt.Errorf("%s exists without %s; refusing to start a new chain over old data", storeFile, homeConfigFile)
	}
	pub, _, err := initHome(dir)
	if err != nil {
		return homeConfig{}, err
	}
	if err := writeGenesis([]string{dir}, chainID, []ed25519.PublicKey{pub}); err != nil {
		return homeConfig{}, err
	}
	hc := homeConfig{ChainID: chainID, Validators: 1}
	// Written last: its presence means the home is complete.
	return hc, writeHomeConfig(dir, hc)
}

// Append submits the entry and waits for its commit.
func (e *Embedded) Append(ctx context.Context, se *verify.SignedEntry) (verify.Receipt, error) {
	return e.ln.Append(ctx, se)
}

// Handler serves the ledger HTTP API.
func (e *Embedded) Handler() http.Handler { return e.h }

// ChainID is the ledger's chain id; the checkpoint origin is
// Origin(ChainID()).
func (e *Embedded) ChainID() string {
	_, vs := e.ln.app.state()
	return vs.chainID
}

// Close stops the node, waiting for the block in progress, and closes the
// store. Entries not yet committed stay in no mempool: their Append calls
// return verify.ErrUnavailable.
func (e *Embedded) Close() error {
	e.closeOnce.Do(func() { e.closeErr = e.ln.stop() })
	return e.closeErr
}
