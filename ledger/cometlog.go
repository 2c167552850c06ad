package ledger

import (
	"context"
	"log/slog"

	cmtlog "github.com/cometbft/cometbft/libs/log"
)

// cometLogger passes CometBFT's log lines to a slog.Logger: errors always,
// info and debug only when verbose. CometBFT is chatty at info level (every
// block, every peer message); a ledger embedded in another program should
// not flood its logs.
type cometLogger struct {
	l       *slog.Logger
	verbose bool
}

func newCometLogger(l *slog.Logger, verbose bool) cmtlog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return cometLogger{l: l.With("component", "cometbft"), verbose: verbose}
}

func (c cometLogger) Debug(msg string, kv ...any) {
	if c.verbose {
		c.l.Log(context.Background(), slog.LevelDebug, msg, kv...)
	}
}

func (c cometLogger) Info(msg string, kv ...any) {
	if c.verbose {
		c.l.Log(context.Background(), slog.LevelInfo, msg, kv...)
	}
}

func (c cometLogger) Error(msg string, kv ...any) {
	if benignErrors[msg] && !c.verbose {
		return
	}
	c.l.Log(context.Background(), slog.LevelError, msg, kv...)
}

func (c cometLogger) With(kv ...any) cmtlog.Logger {
	return cometLogger{l: c.l.With(kv...), verbose: c.verbose}
}

// benignErrors are lines CometBFT logs at error level during an orderly
// stop.
var benignErrors = map[string]bool{
	"Stopped accept routine, as transport is closed": true,
	"Won't start a peer - switch is not running":     true,
	"Error stopping pool":                            true,
	// The v1.0 mempool logs this when gossip delivers a transaction from a
	// peer while the same peer's earlier copy is being checked; harmless.
	"Tx already received from peer": true,
}
