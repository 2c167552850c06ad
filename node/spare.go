package node

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/internal/atomicfile"
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
const (
	spareLogs  = 4
	spareBytes = 16 << 10
)

type spareLog struct {
	id string
	f  *os.File
}

// newSessionID draws a session id.
func newSessionID() (string, error) {
	var raw [protocol.SessionIDSize]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(raw[:]), nil
}

// drawID returns the id of a new session: a spare log's when one is
// ready (its first save then writes into that log), else a fresh one.
// A session that is not created after all gives it back with unused.
func (s *store) drawID() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.spares); n > 0 && !s.shut {
		sp := s.spares[n-1]
		s.spares = s.spares[:n-1]
		s.taken[sp.id] = sp.f
		return sp.id, nil
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
	_, err := f.WriteAt(frame, 0)
	switch {
	case err != nil:
	case len(frame) <= spareBytes:
		err = datasync(f)
	default:
		err = f.Sync()
	}
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
	s.mu.Lock()
	defer s.mu.Unlock()
	s.spareOn = s.sync
	s.refillLocked()
}

// refill makes spare logs up to spareLogs in the background. It is
// called after a session's first frame is synced, so that making them
// does not share that sync's journal commit.
func (s *store) refill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refillLocked()
}

func (s *store) refillLocked() {
	if !s.spareOn || s.shut || s.filling || len(s.spares) >= spareLogs {
		return
	}
	s.filling = true
	s.fillWG.Add(1)
	go s.fill()
}

func (s *store) fill() {
	defer s.fillWG.Done()
	for {
		s.mu.Lock()
		want := spareLogs - len(s.spares)
		if s.shut || want <= 0 {
			s.filling = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		made, err := s.makeSpares(want)
		s.mu.Lock()
		if err != nil || s.shut {
			// A full disk, say: the creates that come make their logs
			// themselves, and report the error if it persists.
			s.filling = false
			s.mu.Unlock()
			removeSpares(s, made)
			return
		}
		s.spares = append(s.spares, made...)
		s.mu.Unlock()
	}
}

// makeSpares creates k logs of spareBytes zeros under fresh ids and
// syncs them and their names (one directory sync for all).
func (s *store) makeSpares(k int) ([]spareLog, error) {
	var made []spareLog
	for range k {
		id, err := newSessionID()
		if err != nil {
			removeSpares(s, made)
			return nil, err
		}
		f, err := os.OpenFile(s.logPath(id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			removeSpares(s, made)
			return nil, err
		}
		made = append(made, spareLog{id: id, f: f})
		if _, err := f.Write(zeros[:spareBytes]); err != nil {
			removeSpares(s, made)
			return nil, err
		}
		if err := f.Sync(); err != nil {
			removeSpares(s, made)
			return nil, err
		}
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		removeSpares(s, made)
		return nil, err
	}
	return made, nil
}

// dropSpares removes the spare logs not handed out, once the store is
// shut (no more are made).
func (s *store) dropSpares() {
	s.fillWG.Wait()
	s.mu.Lock()
	sp := s.spares
	s.spares = nil
	for id, f := range s.taken {
		sp = append(sp, spareLog{id: id, f: f})
		delete(s.taken, id)
	}
	s.mu.Unlock()
	removeSpares(s, sp)
}

func removeSpares(s *store, sp []spareLog) {
	for _, l := range sp {
		l.f.Close()
		os.Remove(s.logPath(l.id))
	}
}

// removeEmptyLogs removes the session logs in dir that hold nothing but
// zeros (at most a spare's): spares left by a node that stopped without
// closing its store, or creates cut short before their first byte.
// Neither was ever acknowledged.
func removeEmptyLogs(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), logSuffix)
		if !ok || !e.Type().IsRegular() || protocol.ValidSessionID(id) != nil {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if fi, err := e.Info(); err != nil || fi.Size() > spareBytes {
			continue
		}
		if b, err := os.ReadFile(path); err == nil && len(b) <= spareBytes && bytes.Count(b, []byte{0}) == len(b) {
			os.Remove(path)
		}
	}
}
