package node

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/internal/prealloc"
)

// Spare logs: a session's create is acknowledged only once its first
// frame is on stable storage, and creating its log there took two
// fsyncs, the file's and its directory's (the name), the first waiting
// for a commit of the file system's journal (the new file's blocks and
// size), which under load means waiting for other files' data too. A
// syncing store therefore creates a few logs ahead of time, under
// session ids drawn for sessions to come: each spareBytes of zeros,
// written, synced and its name synced, so that its blocks, size and name
// are already durable. A create takes one, writes its first frame over
// the zeros and syncs that file's data alone (fdatasync: no metadata
// changed, no journal commit; a frame longer than the spare grows the
// file and gets a full fsync). What an acknowledged create means is
// unchanged: the frame, the file and its name are all durable before
// the create returns, the name and blocks merely became so earlier.
//
// The zeros after the first frame are not a frame: loading the log reads
// up to the last complete frame and cuts the rest off, as it does a torn
// frame; the next append writes over them. A spare holds no frame, so a
// node that stops with spares on disk finds logs without a complete
// frame, which were never acknowledged to anyone (a create cut short
// reads the same): one of zeros only is removed when the store opens, a
// torn one by restore. A spare's id is known to nobody outside the node
// until a create hands it out, and each is handed out once.

// spareLogs is how many spare logs a syncing store keeps ready, and
// spareBytes the zeros each holds: room for a first frame (a market
// session's is about 3 KiB; one with a larger policy grows the file).
// The files are made by package prealloc, shared with the federation
// holder's call log.
const (
	spareLogs  = 4
	spareBytes = 16 << 10
)

// newSessionID draws a session id.
func newSessionID() (string, error) {
	var raw [protocol.SessionIDSize]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(raw[:]), nil
}

// newSpares returns the pool of spare logs of a store over dir.
func newSpares(dir string) *prealloc.Pool {
	return prealloc.NewPool(dir, spareLogs, spareBytes, func() (string, error) {
		id, err := newSessionID()
		return id + logSuffix, err
	})
}

// drawID returns the id of a new session: a spare log's when one is
// ready (its first save then writes into that log), else a fresh one.
// A session that is not created after all gives it back with unused.
func (s *store) drawID() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shut {
		return newSessionID()
	}
	if sp, ok := s.spares.Take(); ok {
		id := strings.TrimSuffix(sp.Name, logSuffix)
		s.taken[id] = sp.F
		return id, nil
	}
	return newSessionID()
}

// unused removes the spare log drawn for session id if its first frame
// was never saved (its create failed before), and makes another;
// otherwise it does nothing.
func (s *store) unused(id string) {
	if f := s.takeSpare(id); f != nil {
		f.Close()
		os.Remove(s.logPath(id))
		s.refill()
	}
}

// takeSpare returns the spare log drawn for session id, or nil.
func (s *store) takeSpare(id string) *os.File {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.taken[id]
	delete(s.taken, id)
	return f
}

// writeSpare writes a new session's first frame into its spare log f at
// path and syncs it: the log's name was synced when the spare was made.
// On error the log is removed (the create was not acknowledged).
func (s *store) writeSpare(id, path string, f *os.File, frame []byte) error {
	err := prealloc.WriteAt(f, frame, 0, spareBytes)
	if err == nil && s.keepFile(id, f) {
		return nil
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// startSpares lets a syncing store make spare logs, once the stored
// sessions are restored (restore would take an empty log for a create
// cut short), and makes the first ones in the background.
func (s *store) startSpares() {
	if s.sync {
		s.spares.Start()
	}
}

// refill makes spare logs up to spareLogs in the background. It is
// called after a session's first frame is synced, so that making them
// does not share that sync's journal commit.
func (s *store) refill() { s.spares.Refill() }

// dropSpares removes the spare logs not handed out, once the store is
// shut (no more are made).
func (s *store) dropSpares() {
	s.spares.Close()
	s.mu.Lock()
	taken := s.taken
	s.taken = map[string]*os.File{}
	s.mu.Unlock()
	for id, f := range taken {
		f.Close()
		os.Remove(s.logPath(id))
	}
}

// removeEmptyLogs removes the session logs in dir that hold nothing but
// zeros (at most a spare's): spares left by a node that stopped without
// closing its store, or creates cut short before their first byte.
// Neither was ever acknowledged.
func removeEmptyLogs(dir string) {
	prealloc.RemoveZeros(dir, func(name string) bool {
		id, ok := strings.CutSuffix(name, logSuffix)
		return ok && protocol.ValidSessionID(id) == nil
	}, spareBytes)
}
