package ledger

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/cockroachdb/pebble"
	dbm "github.com/cometbft/cometbft-db"
	cfg "github.com/cometbft/cometbft/config"
)

// guardedDB wraps CometBFT's databases for an orderly in-process stop.
// CometBFT v1.0.1 closes its block and state stores in Node.OnStop while
// per-peer gossip goroutines may still be between two reads; pebble
// panics on a read after close, and so would the whole program embedding
// the ledger. After Close, reads find nothing and writes are dropped
// (consensus has stopped; nothing that matters still writes), and Close
// itself waits for reads in flight.
type guardedDB struct {
	dbm.DB
	mu     sync.RWMutex
	closed bool
}

// guardedDBProvider opens CometBFT's pebble databases with their log
// lines (WAL recovery notes and the like) sent to the ledger's logger
// instead of the process-wide standard logger.
func guardedDBProvider(logger *slog.Logger) cfg.DBProvider {
	return func(ctx *cfg.DBContext) (dbm.DB, error) {
		var db dbm.DB
		var err error
		if ctx.Config.DBBackend == string(dbm.PebbleDBBackend) {
			opts := &pebble.Options{Logger: pebbleLogger{logger.With("component", "pebble", "db", ctx.ID)}}
			db, err = dbm.NewPebbleDBWithOpts(ctx.ID, ctx.Config.DBDir(), opts)
		} else {
			db, err = cfg.DefaultDBProvider(ctx)
		}
		if err != nil {
			return nil, err
		}
		return &guardedDB{DB: db}, nil
	}
}

type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(string, ...any) {}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}

// Fatalf must not return (pebble's contract).
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg)
	panic("pebble: " + msg)
}

func (g *guardedDB) Get(key []byte) ([]byte, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return nil, nil
	}
	return g.DB.Get(key)
}

func (g *guardedDB) Has(key []byte) (bool, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return false, nil
	}
	return g.DB.Has(key)
}

func (g *guardedDB) write(f func() error) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return nil
	}
	return f()
}

func (g *guardedDB) Set(k, v []byte) error { return g.write(func() error { return g.DB.Set(k, v) }) }
func (g *guardedDB) SetSync(k, v []byte) error {
	return g.write(func() error { return g.DB.SetSync(k, v) })
}
func (g *guardedDB) Delete(k []byte) error { return g.write(func() error { return g.DB.Delete(k) }) }
func (g *guardedDB) DeleteSync(k []byte) error {
	return g.write(func() error { return g.DB.DeleteSync(k) })
}

func (g *guardedDB) Iterator(start, end []byte) (dbm.Iterator, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return emptyIterator{start, end}, nil
	}
	return g.DB.Iterator(start, end)
}

func (g *guardedDB) ReverseIterator(start, end []byte) (dbm.Iterator, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return emptyIterator{start, end}, nil
	}
	return g.DB.ReverseIterator(start, end)
}

func (g *guardedDB) NewBatch() dbm.Batch { return &guardedBatch{Batch: g.DB.NewBatch(), g: g} }

func (g *guardedDB) Compact(start, end []byte) error {
	return g.write(func() error { return g.DB.Compact(start, end) })
}

func (g *guardedDB) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	return g.DB.Close()
}

type guardedBatch struct {
	dbm.Batch
	g *guardedDB
}

func (b *guardedBatch) Write() error     { return b.g.write(b.Batch.Write) }
func (b *guardedBatch) WriteSync() error { return b.g.write(b.Batch.WriteSync) }

type emptyIterator struct{ start, end []byte }

func (it emptyIterator) Domain() ([]byte, []byte) { return it.start, it.end }
func (emptyIterator) Valid() bool                 { return false }
func (emptyIterator) Next()                       { panic("emptyIterator.Next: iterator is not valid") }
func (emptyIterator) Key() []byte                 { panic("emptyIterator.Key: iterator is not valid") }
func (emptyIterator) Value() []byte               { panic("emptyIterator.Value: iterator is not valid") }
func (emptyIterator) Error() error                { return nil }
func (emptyIterator) Close() error                { return nil }
