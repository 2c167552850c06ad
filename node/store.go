package node

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/internal/prealloc"
	"github.com/cloisterhq/cloister/isolate"
)

// Session state on disk, under DATA/sessions/:
//
//	<id>.log           frames sealed with AES-256-GCM under the storage key:
//	                   the session's record (below), appended whole at every
//	                   step (the last complete record frame is the state), and
//	                   each envelope of up to 64 KiB, appended once when it is
//	                   stored (the record names it by SHA-256).
//	<id>/blob-<sha256> larger envelopes as received or produced (already
//	                   HPKE-sealed to the session key or to a reader; never
//	                   plaintext); the directory exists only for them
//	closed.log         one JSON line per closed session: who and when
//
// Appending a frame to a file that already exists costs one write and one
// fsync; creating a file, renaming it into place and syncing its directory
// costs several times as much CPU and latency, once per step. So a session
// has one file, made at create or, in a syncing store, ahead of it with
// its name already synced (spare.go), and every later step appends; and that file
// lies directly in sessions/, so that creating it is one directory sync
// and erasing it one unlink (a directory per session cost a mkdir and a
// second directory sync at create, and a directory scan and rmdir at
// erase). Logs written by earlier versions as <id>/state.log are still
// read and appended to where they are. A crash
// during an append leaves a torn last frame, which fails to open and is cut
// off at the next start: the state is the previous step, which is what the
// client was told (a step is acknowledged only after its frame is synced).
// The log is rewritten (temporary file, fsync, rename) when it grows past
// a few records' worth, with the envelopes the record still names and the
// record, so its size stays proportional to the session. An envelope frame
// is not synced by itself: the record frame that names it comes after it
// in the same file and is, so a record is never durable without its
// envelopes. (Version-1 logs, whose records carried small envelopes inline
// and were re-encoded at every step, are still read. A node of an earlier
// version does not see sessions stored as <id>.log, and reads a version-2
// <id>/state.log as holding no complete frame and erases the session: a
// node is not downgraded while sessions are live.)
//
// Sessions stored by earlier versions as <id>/state.sealed (one sealed
// record) and <id>.closed tombstones are still read; the first step after
// such a session is restored moves it to <id>.log.

const (
	logFile       = "state.log" // <id>/state.log: the log of earlier versions
	logSuffix     = ".log"      // <id>.log
	logMagic      = "CLSL"
	logVersion    = 2 // v1: every frame a record; v2: a kind byte first
	logVersionV1  = 1
	legacyFile    = "state.sealed"
	legacyMagic   = "CLSS"
	legacyVersion = 1
	closedLog     = "closed.log"
	legacyClosed  = ".closed"
	storageKeyLbl = "cloister/v1/node-storage-key"
	// cacheKeyLbl derives the key of the isolate's compilation cache.
	cacheKeyLbl  = "cloister/v1/node-isolate-cache-key"
	stateVersion = 1
	// Kinds of version-2 frames: the first byte of the plaintext.
	frameRecord   = 'R'
	frameEnvelope = 'E'
	// logHeader is magic, version, sequence number (8 bytes), length of
	// the sealed record that follows (4 bytes).
	logHeader = len(logMagic) + 1 + 8 + 4
	// maxFrame bounds one sealed record (inline envelopes are at most
	// 64 KiB each, larger ones are blobs; the policy is at most 1 MiB).
	maxFrame = 256 << 20
)

// Session states as stored (and as the API enum names them).
const (
	stateProvisioning = "provisioning"
	stateRunning      = "running"
	stateFinished     = "finished"
	stateFailed       = "failed"
	stateClosed       = "closed"
)

// record is one session's durable state. It holds the session's private
// keys, so it is only ever written sealed.
type record struct {
	Version   int                      `json:"version"`
	ID        string                   `json:"id"`
	Policy    []byte                   `json:"policy"`            // canonical form
	Creator   string                   `json:"creator,omitempty"` // whose quotas the session counts against
	Created   time.Time                `json:"created"`
	Keys      coreKeys                 `json:"keys"`
	State     string                   `json:"state"`
	Reason    string                   `json:"reason,omitempty"`
	Programs  map[string]*slotRecord   `json:"programs"`
	Inputs    map[string]*slotRecord   `json:"inputs"`
	Outputs   map[string]*outputRecord `json:"outputs"`
	Report    *isolate.Report          `json:"report,omitempty"`
	Events    []eventRecord            `json:"events"`
	Restarted int                      `json:"restarted,omitempty"` // runs restarted after a node restart
	// Replica is the replica set of a replicated session (replicas.go).
	Replica *replicaRecord `json:"replica,omitempty"`
}

type slotRecord struct {
	Principal      string    `json:"principal"`
	EnvelopeSHA256 string    `json:"envelope_sha256"`
	Inline         []byte    `json:"inline,omitempty"` // the envelope, when small enough to live in the state
	Uploaded       time.Time `json:"uploaded"`
	Signature      []byte    `json:"signature"`
	// Stream is set for a streamed upload (stream.go): a sealed file in
	// the session's directory instead of an envelope.
	Stream *streamRecord `json:"stream,omitempty"`
}

type outputRecord struct {
	// Envelopes maps reader id to the blob hash of the output sealed to it.
	Envelopes map[string]string `json:"envelopes"`
	// Inline maps reader id to the envelope itself when it is small.
	Inline  map[string][]byte `json:"inline,omitempty"`
	Fetched []string          `json:"fetched,omitempty"`
	// Stream is set for an output kept as a sealed file (stream.go);
	// Envelopes then holds each reader's stream manifest hash.
	Stream *outputStream `json:"stream,omitempty"`
}

type eventRecord struct {
	Kind        string    `json:"kind"`
	Principal   string    `json:"principal,omitempty"`
	Name        string    `json:"name,omitempty"`
	Time        time.Time `json:"time"`
	LedgerIndex uint64    `json:"ledger_index,omitempty"`
	// Entry is the event's entry for a NumberedEventLog while the log has
	// not confirmed it: saved with the step, recorded again after a
	// restart until it is confirmed.
	Entry *stagedEntry `json:"entry,omitempty"`
}

// stagedEntry is an event-log entry of a committed step.
type stagedEntry struct {
	Kind   string          `json:"kind"`
	Body   json.RawMessage `json:"body"`
	Number uint64          `json:"number,omitempty"` // 0: an EventLog without numbers
}

type tombstone struct {
	ID     string    `json:"id"`
	Closed time.Time `json:"closed"`
	By     string    `json:"by"`
	// Entries are the session's entries not confirmed when it was closed,
	// its session.closed entry last: the session's state is erased, so
	// they are kept here until a later line says Recorded. On disk they
	// are SealedEntries, sealed like the session's state (the node signs
	// what it replays from here, so nobody who can only write the data
	// directory may put anything in it); entriesErr says why they did not
	// open.
	Entries       []stagedEntry `json:"-"`
	SealedEntries []byte        `json:"sealed_entries,omitempty"`
	entriesErr    error
	// Recorded marks a line saying that the closed session's entries are
	// all on the log (it carries only the id).
	Recorded bool `json:"recorded,omitempty"`
}

// store keeps session records and blobs under one directory.
type store struct {
	dir  string
	aead cipher.AEAD
	sync bool

	mu   sync.Mutex
	logs map[string]*logState // by session id; saves of one session are serialised by its session's lock
	// files holds the open log of each session that has one open (at most
	// maxOpenLogs): an append is then a write and an fsync, without an
	// open and a close around them.
	files map[string]*os.File
	// shut is set by close: a recorder still running after it (Node.Close
	// waits for them only so long) must not reopen logs.
	shut bool
	// spares are logs created ahead of the sessions that will use them
	// (spare.go); taken holds those handed out by drawID whose session
	// has not saved its first frame yet.
	spares *prealloc.Pool
	taken  map[string]*os.File

	closed *appendLog
}

// logState is where one session's log stands.
type logState struct {
	path   string // the log file ("" while legacy)
	seq    uint64 // sequence number of the last frame written
	size   int64  // bytes of complete frames
	legacy bool   // restored from state.sealed; state.log not written yet
	// envelopes holds the envelopes stored in the log, by hex SHA-256.
	envelopes map[string][]byte
	// envBytes is how much of size their frames take: compaction is
	// about repeated records, so it looks at the rest.
	envBytes int64
}

// deriveStorageKey derives the AES-256 key that seals session state from
// the node's platform key seed: whoever can read platform.key can read the
// state anyway (it can impersonate the node), and nothing else can.
func deriveStorageKey(platformSeed []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, platformSeed, nil, storageKeyLbl, 32)
}

func openStore(dir string, key []byte, sync bool) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("session store %s: %w", dir, err)
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	s := &store{dir: dir, aead: aead, sync: sync, logs: map[string]*logState{}, files: map[string]*os.File{}, taken: map[string]*os.File{}, spares: newSpares(dir)}
	// A compaction or blob write cut short leaves its temporary file (what
	// it was to replace is intact): in sessions/, or in a session's own
	// directory (blobs, and logs of the earlier layout).
	for _, pattern := range []string{atomicfile.TempGlob, filepath.Join("*", atomicfile.TempGlob)} {
		tmps, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, t := range tmps {
			zeroFile(t)
			os.Remove(t)
		}
	}
	removeEmptyLogs(dir)
	if s.closed, err = openAppendLog(filepath.Join(dir, closedLog), sync); err != nil {
		return nil, fmt.Errorf("session store %s: %w", dir, err)
	}
	return s, nil
}

// close releases the store's open files.
func (s *store) close() error {
	s.mu.Lock()
	s.shut = true
	for id, f := range s.files {
		f.Close()
		delete(s.files, id)
	}
	s.mu.Unlock()
	s.dropSpares()
	return s.closed.close()
}

// maxOpenLogs bounds the session logs kept open between appends; past it,
// an append opens and closes the log itself.
const maxOpenLogs = 512

// keepFile keeps f open as session id's log if there is room, and reports
// whether it did (if not, the caller closes f).
func (s *store) keepFile(id string, f *os.File) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.files[id]; ok || len(s.files) >= maxOpenLogs || s.shut {
		return false
	}
	s.files[id] = f
	return true
}

// openLog returns session id's log open for writing, and whether it is
// kept open (if not, the caller closes it).
func (s *store) openLog(id, path string) (*os.File, bool, error) {
	s.mu.Lock()
	f := s.files[id]
	s.mu.Unlock()
	if f != nil {
		return f, true, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, false, err
	}
	return f, s.keepFile(id, f), nil
}

// dropFile closes session id's log if it is kept open: before the file is
// replaced (compaction) or erased.
func (s *store) dropFile(id string) {
	s.mu.Lock()
	f := s.files[id]
	delete(s.files, id)
	s.mu.Unlock()
	if f != nil {
		f.Close()
	}
}

func (s *store) sessionDir(id string) string { return filepath.Join(s.dir, id) }

// logPath is where a new session's log goes; dirLogPath is where earlier
// versions put it.
func (s *store) logPath(id string) string    { return filepath.Join(s.dir, id+logSuffix) }
func (s *store) dirLogPath(id string) string { return filepath.Join(s.sessionDir(id), logFile) }

func stateAAD(id string) []byte { return []byte("cloister/v1/session-state\x00" + id) }

func tombstoneAAD(id string) []byte { return []byte("cloister/v1/tombstone-entries\x00" + id) }

// openEntries unseals a tombstone's SealedEntries into Entries.
func (s *store) openEntries(ts *tombstone) {
	b := ts.SealedEntries
	ts.SealedEntries = nil
	ns := s.aead.NonceSize()
	if len(b) < ns {
		ts.entriesErr = errors.New("sealed entries too short")
		return
	}
	plain, err := s.aead.Open(nil, b[:ns], b[ns:], tombstoneAAD(ts.ID))
	if err != nil {
		ts.entriesErr = errors.New("sealed entries do not open with this node's storage key for this session (modified, or moved from another tombstone)")
		return
	}
	if err := json.Unmarshal(plain, &ts.Entries); err != nil {
		ts.entriesErr = fmt.Errorf("sealed entries: %w", err)
	}
}

// frameAAD binds a frame to its session and its place in the log, so that
// frames cannot be reordered or moved between sessions without detection.
func frameAAD(id string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte("cloister/v1/session-log\x00"+id+"\x00"), seq)
}

// frameAADv2 also binds the frame format version, which the header carries
// in the clear.
func frameAADv2(id string, seq uint64) []byte {
	return append(frameAAD(id, seq), logVersion)
}

// sealFrame seals rec as frame number seq into buf (reset first) and
// returns the frame, which aliases buf.
func (s *store) sealFrame(buf *frameBuffers, rec *record, seq uint64) ([]byte, error) {
	buf.plain.Reset()
	buf.plain.WriteByte(frameRecord)
	if err := json.NewEncoder(&buf.plain).Encode(rec); err != nil {
		return nil, fmt.Errorf("encoding session %s: %w", rec.ID, err)
	}
	return s.sealPlain(buf, rec.ID, seq)
}

// sealEnvelopeFrame seals an envelope as frame number seq into buf.
func (s *store) sealEnvelopeFrame(buf *frameBuffers, id string, env []byte, seq uint64) ([]byte, error) {
	buf.plain.Reset()
	buf.plain.WriteByte(frameEnvelope)
	buf.plain.Write(env)
	return s.sealPlain(buf, id, seq)
}

// sealPlain seals buf.plain as frame number seq of session id into
// buf.frame and returns it.
func (s *store) sealPlain(buf *frameBuffers, id string, seq uint64) ([]byte, error) {
	return s.sealPlainVersion(buf, id, seq, logVersion)
}

// sealPlainVersion is sealPlain in a given frame format (tests write
// version-1 frames with it).
func (s *store) sealPlainVersion(buf *frameBuffers, id string, seq uint64, version byte) ([]byte, error) {
	plain := buf.plain.Bytes()
	n := s.aead.NonceSize() + len(plain) + s.aead.Overhead()
	if n > maxFrame {
		return nil, fmt.Errorf("session %s: state is %d bytes, at most %d", id, n, maxFrame)
	}
	out := slices.Grow(buf.frame[:0], logHeader+n)[:logHeader]
	copy(out, logMagic)
	out[len(logMagic)] = version
	binary.BigEndian.PutUint64(out[len(logMagic)+1:], seq)
	binary.BigEndian.PutUint32(out[len(logMagic)+9:], uint32(n))
	nonce := out[logHeader : logHeader+s.aead.NonceSize()]
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	aad := frameAADv2(id, seq)
	if version == logVersionV1 {
		aad = frameAAD(id, seq)
	}
	out = s.aead.Seal(out[:logHeader+len(nonce)], nonce, plain, aad)
	buf.frame = out
	return out, nil
}

// frameBuffers are reused across saves: a record with inline envelopes is
// tens of KiB, encoded and sealed at every step. The plaintext (which
// holds the session's keys) is zeroed before a buffer goes back.
type frameBuffers struct {
	plain bytes.Buffer
	frame []byte
}

var framePool = sync.Pool{New: func() any { return new(frameBuffers) }}

func getFrameBuffers() *frameBuffers { return framePool.Get().(*frameBuffers) }

func putFrameBuffers(b *frameBuffers) {
	b.plain.Reset()
	clear(b.plain.Bytes()[:b.plain.Cap()])
	if b.plain.Cap() > 4<<20 || cap(b.frame) > 4<<20 {
		return // let the occasional huge record go
	}
	framePool.Put(b)
}

// save appends rec to its session's log. With durable (and the store
// syncing), it returns only once the frame is on stable storage; without,
// the frame reaches the disk with the next durable save or the kernel's
// write-back, and a crash may lose it (never corrupt the state). Callers
// serialise saves of one session (the session's lock). On error nothing
// changed: a partly written frame is cut off again.
func (s *store) save(rec *record, durable bool) error {
	s.mu.Lock()
	st, shut := s.logs[rec.ID], s.shut
	s.mu.Unlock()
	if shut {
		return errStoreClosed
	}
	fresh := st == nil || st.legacy
	next := logState{seq: 1, path: s.logPath(rec.ID)}
	if st != nil {
		next.seq = st.seq + 1
		next.envelopes, next.envBytes = st.envelopes, st.envBytes
		if !fresh {
			next.path = st.path
		}
	}
	buf := getFrameBuffers()
	defer putFrameBuffers(buf)
	frame, err := s.sealFrame(buf, rec, next.seq)
	if err != nil {
		return err
	}
	path := next.path
	switch {
	case fresh:
		// A new session (or one moving from state.sealed): the log is
		// created here, the only file creation of a session with small
		// envelopes — or, for a session whose id is a spare log's, was
		// created beforehand (spare.go) and is written and synced.
		s.dropFile(rec.ID)
		if f := s.takeSpare(rec.ID); f != nil {
			if err := s.writeSpare(rec.ID, path, f, frame); err != nil {
				return err
			}
		} else if err := s.createLog(rec.ID, path, frame); err != nil {
			return err
		}
		if st != nil && st.legacy {
			os.Remove(filepath.Join(s.sessionDir(rec.ID), legacyFile))
		}
		next.size = int64(len(frame))
		s.refill()
	case st.size-st.envBytes+int64(len(frame)) > compactAt(len(frame)):
		// Rewrite the log: the envelopes rec names, then rec.
		data, seq, kept, envBytes, err := s.compacted(rec, st)
		if err != nil {
			return err
		}
		s.dropFile(rec.ID) // the rename below unlinks the file it has open
		if err := s.writeAtomic(path, data); err != nil {
			// The rename may have happened (a failed directory sync):
			// where the log stands is read back from the file there.
			if _, lerr := s.load(rec.ID); lerr != nil {
				s.mu.Lock()
				delete(s.logs, rec.ID)
				s.mu.Unlock()
			}
			return err
		}
		next.seq, next.size, next.envelopes, next.envBytes = seq, int64(len(data)), kept, envBytes
	default:
		if err := s.appendFrame(rec.ID, path, st.size, frame, durable); err != nil {
			return err
		}
		next.size = st.size + int64(len(frame))
	}
	s.mu.Lock()
	s.logs[rec.ID] = &next
	s.mu.Unlock()
	return nil
}

// compacted returns a log holding the envelopes rec names (from st) and
// rec, numbered from st.seq+1, with the number of its last frame, the
// envelopes kept and the bytes their frames take.
func (s *store) compacted(rec *record, st *logState) (data []byte, seq uint64, kept map[string][]byte, envBytes int64, err error) {
	seq = st.seq
	kept = map[string][]byte{}
	buf := getFrameBuffers()
	defer putFrameBuffers(buf)
	for _, sha := range envelopesNamed(rec) {
		env, ok := st.envelopes[sha]
		if !ok || kept[sha] != nil {
			continue
		}
		seq++
		f, err := s.sealEnvelopeFrame(buf, rec.ID, env, seq)
		if err != nil {
			return nil, 0, nil, 0, err
		}
		data = append(data, f...)
		kept[sha] = env
	}
	envBytes = int64(len(data))
	seq++
	f, err := s.sealFrame(buf, rec, seq)
	if err != nil {
		return nil, 0, nil, 0, err
	}
	return append(data, f...), seq, kept, envBytes, nil
}

// envelopesNamed lists the envelope hashes rec refers to.
func envelopesNamed(rec *record) []string {
	var out []string
	for _, slots := range []map[string]*slotRecord{rec.Programs, rec.Inputs} {
		for _, sl := range slots {
			out = append(out, sl.EnvelopeSHA256)
		}
	}
	for _, o := range rec.Outputs {
		for _, sha := range o.Envelopes {
			out = append(out, sha)
		}
	}
	sort.Strings(out)
	return out
}

// createLog writes a new log holding frame. No temporary file is needed:
// a log cut short by a crash holds no complete frame, which load reports as
// errNoFrame (a session whose create was never acknowledged, or one still
// in state.sealed).
func (s *store) createLog(id, path string, frame []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	_, err = f.Write(frame)
	if err == nil && s.sync {
		err = f.Sync()
	}
	if err != nil || !s.keepFile(id, f) {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil && s.sync {
		err = atomicfile.SyncDir(filepath.Dir(path)) // the log's name
	}
	if err != nil {
		s.dropFile(id)
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// compactAt is the log size past which the log is rewritten with the
// latest frame alone: a few frames' worth, so that appends stay cheap and
// the file stays proportional to the record.
func compactAt(frame int) int64 { return 4*int64(frame) + 1<<20 }

// appendFrame writes frame at offset off (the end of the last complete
// frame) of session id's log and, if durable, syncs it.
func (s *store) appendFrame(id, path string, off int64, frame []byte, durable bool) error {
	f, kept, err := s.openLog(id, path)
	if err != nil {
		return fmt.Errorf("appending to %s: %w", path, err)
	}
	_, err = f.WriteAt(frame, off)
	if err == nil && durable && s.sync {
		err = f.Sync()
	}
	if err != nil {
		// Cut the partial frame off, so that the log ends with the last
		// complete one whatever happens next.
		f.Truncate(off)
		if kept {
			s.dropFile(id)
		} else {
			f.Close()
		}
		return fmt.Errorf("appending to %s: %w", path, err)
	}
	if kept {
		return nil
	}
	return f.Close()
}

// load reads and unseals one session's record: the last complete frame of
// its log (a torn frame at the end, left by a crash during an append, is
// cut off), or a state.sealed of an earlier version.
func (s *store) load(id string) (*record, error) {
	path := s.logPath(id)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		path = s.dirLogPath(id)
		data, err = os.ReadFile(path)
	}
	if errors.Is(err, os.ErrNotExist) {
		return s.loadLegacy(id)
	}
	if err != nil {
		return nil, err
	}
	rec, st, err := s.parseLog(id, data)
	if errors.Is(err, errNoFrame) {
		// Cut short while being created: from state.sealed if it is
		// there, else the session was never acknowledged.
		return s.loadLegacy(id)
	}
	if err != nil {
		return nil, err
	}
	if st.size < int64(len(data)) {
		if err := os.Truncate(path, st.size); err != nil {
			return nil, fmt.Errorf("session %s: cutting a torn frame off %s: %w", id, filepath.Base(path), err)
		}
	}
	st.path = path
	s.mu.Lock()
	s.logs[id] = st
	s.mu.Unlock()
	return rec, nil
}

var errStoreClosed = errors.New("session store closed")

// errNoFrame marks a log holding no complete frame: the session's create
// never finished, so it was never acknowledged.
var errNoFrame = errors.New("state log holds no complete frame")

// parseLog returns the record in the last complete frame of data. Frames
// must be numbered 1, 2, … (compaction keeps the number of the frame it
// keeps, so a rewritten log starts anywhere) and each must open; the first
// that is short or does not open ends the log.
func (s *store) parseLog(id string, data []byte) (*record, *logState, error) {
	var last []byte
	st := &logState{}
	defer func() { clear(last) }()
	for off := 0; ; {
		rest := data[off:]
		if len(rest) < logHeader || string(rest[:len(logMagic)]) != logMagic {
			break
		}
		version := rest[len(logMagic)]
		if version != logVersion && version != logVersionV1 {
			break
		}
		seq := binary.BigEndian.Uint64(rest[len(logMagic)+1:])
		n := int(binary.BigEndian.Uint32(rest[len(logMagic)+9:]))
		if n < s.aead.NonceSize()+s.aead.Overhead() || n > maxFrame || len(rest) < logHeader+n || (st.seq != 0 && seq != st.seq+1) {
			break
		}
		body := rest[logHeader : logHeader+n]
		ns := s.aead.NonceSize()
		aad := frameAADv2(id, seq)
		if version == logVersionV1 {
			aad = frameAAD(id, seq)
		}
		plain, err := s.aead.Open(nil, body[:ns], body[ns:], aad)
		if err != nil {
			if st.seq == 0 {
				return nil, nil, fmt.Errorf("session %s: state does not open with this node's storage key (another platform key, or modified)", id)
			}
			break
		}
		switch {
		case version == logVersionV1:
			clear(last)
			last = plain
		case len(plain) > 0 && plain[0] == frameRecord:
			clear(last)
			last = plain[1:]
		case len(plain) > 0 && plain[0] == frameEnvelope:
			env := plain[1:]
			sum := sha256.Sum256(env)
			if st.envelopes == nil {
				st.envelopes = map[string][]byte{}
			}
			st.envelopes[hex.EncodeToString(sum[:])] = env
			st.envBytes += int64(logHeader + n)
		default:
			return nil, nil, fmt.Errorf("session %s: state log frame %d has unknown kind", id, seq)
		}
		st.seq = seq
		off += logHeader + n
		st.size = int64(off)
	}
	if last == nil {
		return nil, nil, fmt.Errorf("session %s: %w", id, errNoFrame)
	}
	rec, err := decodeRecord(id, last)
	if err != nil {
		return nil, nil, err
	}
	return rec, st, nil
}

func decodeRecord(id string, plain []byte) (*record, error) {
	var rec record
	if err := json.Unmarshal(plain, &rec); err != nil {
		return nil, fmt.Errorf("session %s: decoding state: %w", id, err)
	}
	if rec.ID != id || rec.Version != stateVersion {
		return nil, fmt.Errorf("session %s: state names session %q version %d", id, rec.ID, rec.Version)
	}
	return &rec, nil
}

// loadLegacy reads a state.sealed written by an earlier version.
func (s *store) loadLegacy(id string) (*record, error) {
	data, err := os.ReadFile(filepath.Join(s.sessionDir(id), legacyFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("session %s: %w", id, errNoFrame)
		}
		return nil, err
	}
	hdr := len(legacyMagic) + 1 + s.aead.NonceSize()
	if len(data) < hdr+s.aead.Overhead() || string(data[:len(legacyMagic)]) != legacyMagic {
		return nil, fmt.Errorf("session %s: %s is not a sealed session state", id, legacyFile)
	}
	if v := data[len(legacyMagic)]; v != legacyVersion {
		return nil, fmt.Errorf("session %s: state format version %d, this node reads %d", id, v, legacyVersion)
	}
	plain, err := s.aead.Open(nil, data[len(legacyMagic)+1:hdr], data[hdr:], stateAAD(id))
	if err != nil {
		return nil, fmt.Errorf("session %s: state does not open with this node's storage key (another platform key, or modified)", id)
	}
	defer clear(plain)
	rec, err := decodeRecord(id, plain)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.logs[id] = &logState{legacy: true}
	s.mu.Unlock()
	return rec, nil
}

// putBlob stores an envelope and returns its hex SHA-256. It is durable
// before it returns: the frame that refers to it may be synced next.
func (s *store) putBlob(id string, data []byte) (string, error) {
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])
	dir := s.sessionDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return h, s.writeAtomic(filepath.Join(dir, "blob-"+h), data)
}

// inlineMax is the largest envelope kept inside the state record instead of
// its own blob file: one file write and its fsync fewer per small upload.
const inlineMax = 64 << 10

// putEnvelope stores an envelope: small ones are appended to the session's
// log (not synced: the next durable save of the record that names them
// syncs them too), larger ones are written as blobs. Only a session whose
// log is not written yet (or is a state.sealed of an earlier version) gets
// a small envelope back to keep inline in its record. Callers serialise
// puts and saves of one session.
func (s *store) putEnvelope(id string, data []byte) (sha string, inline []byte, err error) {
	if len(data) > inlineMax {
		sha, err = s.putBlob(id, data)
		return sha, nil, err
	}
	sum := sha256.Sum256(data)
	sha = hex.EncodeToString(sum[:])
	s.mu.Lock()
	st := s.logs[id]
	s.mu.Unlock()
	if st == nil || st.legacy {
		return sha, bytes.Clone(data), nil
	}
	if _, ok := st.envelopes[sha]; ok {
		return sha, nil, nil
	}
	buf := getFrameBuffers()
	defer putFrameBuffers(buf)
	frame, err := s.sealEnvelopeFrame(buf, id, data, st.seq+1)
	if err != nil {
		return "", nil, err
	}
	if err := s.appendFrame(id, st.path, st.size, frame, false); err != nil {
		return "", nil, err
	}
	next := &logState{path: st.path, seq: st.seq + 1, size: st.size + int64(len(frame)), envBytes: st.envBytes + int64(len(frame)),
		envelopes: map[string][]byte{sha: bytes.Clone(data)}}
	for k, v := range st.envelopes {
		next.envelopes[k] = v
	}
	s.mu.Lock()
	s.logs[id] = next
	s.mu.Unlock()
	return sha, nil, nil
}

// getEnvelope returns an envelope stored by putEnvelope.
func (s *store) getEnvelope(id, sha string, inline []byte) ([]byte, error) {
	if inline == nil {
		s.mu.Lock()
		var env []byte
		if st := s.logs[id]; st != nil {
			env = st.envelopes[sha]
		}
		s.mu.Unlock()
		if env == nil {
			return s.getBlob(id, sha)
		}
		inline = env
	}
	if sum := sha256.Sum256(inline); hex.EncodeToString(sum[:]) != sha {
		return nil, fmt.Errorf("session %s: stored envelope %.12s is corrupt", id, sha)
	}
	return inline, nil
}

// envelopeSize is the size of an envelope stored by putEnvelope, without
// reading it (0 if it cannot be found: the run or fetch that needs it will
// say so).
func (s *store) envelopeSize(id, sha string, inline []byte) int64 {
	if inline != nil {
		return int64(len(inline))
	}
	s.mu.Lock()
	st := s.logs[id]
	var env []byte
	if st != nil {
		env = st.envelopes[sha]
	}
	s.mu.Unlock()
	if env != nil {
		return int64(len(env))
	}
	if len(sha) != 64 || strings.Trim(sha, "0123456789abcdef") != "" {
		return 0
	}
	fi, err := os.Stat(filepath.Join(s.sessionDir(id), "blob-"+sha))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// sizeOf is what a stored session holds, as the quotas count it: its
// policy and every envelope it names.
func (s *store) sizeOf(rec *record) int64 {
	n := int64(len(rec.Policy))
	for _, slots := range []map[string]*slotRecord{rec.Programs, rec.Inputs} {
		for _, sr := range slots {
			if sr.Stream != nil {
				n += sr.Stream.Size
				continue
			}
			n += s.envelopeSize(rec.ID, sr.EnvelopeSHA256, sr.Inline)
		}
	}
	for _, or := range rec.Outputs {
		if or.Stream != nil {
			n += or.Stream.Size
			continue
		}
		for rd, sha := range or.Envelopes {
			n += s.envelopeSize(rec.ID, sha, or.Inline[rd])
		}
	}
	return n
}

// getBlob reads an envelope back and checks it is the one stored.
func (s *store) getBlob(id, sha string) ([]byte, error) {
	if len(sha) != 64 || strings.Trim(sha, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("session %s: bad blob name %q", id, sha)
	}
	data, err := os.ReadFile(filepath.Join(s.sessionDir(id), "blob-"+sha))
	if err != nil {
		return nil, fmt.Errorf("session %s: reading stored envelope: %w", id, err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != sha {
		return nil, fmt.Errorf("session %s: stored envelope %s is corrupt", id, sha[:12])
	}
	return data, nil
}

// erase records that a session is closed, then removes everything stored
// for it. The tombstone is synced first: once erase returns, a crash at any
// point leaves a session that the next start erases (removeSession) rather
// than serves. Files are overwritten with zeros before removal; on
// copy-on-write or flash storage that is best effort, which is why
// everything in them is sealed in the first place.
func (s *store) erase(id string, ts tombstone) error {
	if len(ts.Entries) > 0 {
		plain, err := json.Marshal(ts.Entries)
		if err != nil {
			return err
		}
		nonce := make([]byte, s.aead.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			return err
		}
		ts.SealedEntries = s.aead.Seal(nonce, nonce, plain, tombstoneAAD(id))
	}
	line, err := json.Marshal(ts)
	if err != nil {
		return err
	}
	if err := s.closed.append(append(line, '\n')); err != nil {
		return fmt.Errorf("recording the close of session %s: %w", id, err)
	}
	s.mu.Lock()
	delete(s.logs, id)
	s.mu.Unlock()
	return s.removeSession(id)
}

// markRecorded notes that a closed session's entries are all on the event
// log. It is not synced: if it is lost, the next start records them again,
// and the log refuses each as already recorded.
func (s *store) markRecorded(id string) error {
	line, err := json.Marshal(tombstone{ID: id, Recorded: true})
	if err != nil {
		return err
	}
	return s.closed.appendLazy(append(line, '\n'))
}

// compactClosed rewrites the log of closed sessions keeping the lines of
// those keep names, and of those whose unconfirmed ledger entries are
// not yet recorded (whatever keep says: they are still to be replayed).
// A Recorded line stays only beside the tombstone it completes.
func (s *store) compactClosed(keep func(id string) bool) (kept, dropped int, err error) {
	err = s.closed.rewrite(func(lines [][]byte) [][]byte {
		type seen struct{ entries, recorded bool }
		ids := make(map[string]*seen, len(lines))
		parsed := make([]tombstone, len(lines))
		for i, l := range lines {
			var ts tombstone
			if json.Unmarshal(l, &ts) != nil || protocol.ValidSessionID(ts.ID) != nil {
				continue
			}
			parsed[i] = ts
			st := ids[ts.ID]
			if st == nil {
				st = &seen{}
				ids[ts.ID] = st
			}
			if ts.Recorded {
				st.recorded = true
			} else if len(ts.SealedEntries) > 0 {
				st.entries = true
			}
		}
		out := lines[:0]
		for i, l := range lines {
			ts := parsed[i]
			st := ids[ts.ID]
			switch {
			case st == nil: // not a tombstone line
			case ts.Recorded && st.entries && keep(ts.ID):
				out = append(out, l)
			case !ts.Recorded && (keep(ts.ID) || st.entries && !st.recorded):
				out = append(out, l)
				kept++
			}
		}
		dropped = len(lines) - len(out)
		return out
	})
	return kept, dropped, err
}

// closedLines is how many lines the log of closed sessions has grown by
// since it was opened or last compacted, plus what it held then.
func (s *store) closedLines() int {
	s.closed.mu.Lock()
	defer s.closed.mu.Unlock()
	return s.closed.lines
}

// zeros is what erased files are overwritten with.
var zeros = make([]byte, 64<<10)

// removeSession zeroes and removes a session's log and its directory
// (blobs, and the files of earlier versions) if it has one.
func (s *store) removeSession(id string) error {
	s.dropFile(id)
	path := s.logPath(id)
	if err := zeroFile(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("erasing session %s: %w", id, err)
		}
	}
	dir := s.sessionDir(id)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for _, e := range entries {
		// A streamed item's file is ciphertext whose key exists only
		// sealed to the session's key, erased with the log: removing it
		// is enough (zeroing gigabytes would only cost the disk).
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), "stream-") {
			zeroFile(filepath.Join(dir, e.Name()))
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("erasing session %s: %w", id, err)
	}
	return nil
}

// zeroFile overwrites a regular file with zeros.
func zeroFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return err
	}
	for left := fi.Size(); left > 0; {
		n, err := f.Write(zeros[:min(left, int64(len(zeros)))])
		if err != nil {
			return err
		}
		left -= int64(n)
	}
	return nil
}

// list returns the ids of stored sessions and the tombstones of closed
// ones. A session both stored and closed was being erased when the node
// stopped: it is listed as closed only (the caller finishes the erasure).
func (s *store) list() (live []string, closed []tombstone, err error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	recorded := map[string]bool{}
	add := func(ts tombstone) {
		if protocol.ValidSessionID(ts.ID) == nil && !seen[ts.ID] {
			seen[ts.ID] = true
			closed = append(closed, ts)
		}
	}
	lines, err := s.closed.readAll()
	if err != nil {
		return nil, nil, err
	}
	for _, l := range lines {
		var ts tombstone
		switch {
		case json.Unmarshal(l, &ts) != nil:
		case ts.Recorded:
			recorded[ts.ID] = true
		default:
			add(ts)
		}
	}
	for i := range closed {
		if recorded[closed[i].ID] {
			closed[i].SealedEntries = nil
		} else if closed[i].SealedEntries != nil {
			s.openEntries(&closed[i])
		}
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, legacyClosed) {
			b, err := os.ReadFile(filepath.Join(s.dir, name))
			if err != nil {
				continue
			}
			var ts tombstone
			if json.Unmarshal(b, &ts) == nil {
				add(ts)
			}
		}
	}
	stored := map[string]bool{}
	for _, e := range entries {
		id := e.Name()
		if !e.IsDir() {
			var ok bool
			if id, ok = strings.CutSuffix(id, logSuffix); !ok || !e.Type().IsRegular() {
				continue
			}
		}
		if protocol.ValidSessionID(id) == nil && !stored[id] {
			stored[id] = true
			live = append(live, id)
		}
	}
	return live, closed, nil
}

// writeAtomic writes data to path with the one atomic writer; with s.sync
// it is durable when writeAtomic returns.
func (s *store) writeAtomic(path string, data []byte) error {
	var opts []atomicfile.Option
	if !s.sync {
		opts = append(opts, atomicfile.NoSync())
	}
	return atomicfile.WriteFile(path, data, 0o600, opts...)
}

// appendLog is a file of lines appended by many writers, with group
// commit: a writer whose line is already covered by an fsync in progress
// or just finished does not issue its own.
type appendLog struct {
	path string
	sync bool

	mu      sync.Mutex
	cond    *sync.Cond
	f       *os.File
	written int64 // bytes written
	synced  int64 // bytes known to be on stable storage
	syncing bool
	lines   int // lines in the file
}

// openAppendLog opens (creating) the log at path. A last line without its
// newline, left by a crash during an append, is cut off.
func openAppendLog(path string, durable bool) (*appendLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	size := int64(bytes.LastIndexByte(data, '\n') + 1)
	if size < int64(len(data)) {
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, err
		}
	}
	if durable && len(data) == 0 {
		// The file may be new: make its name durable.
		if err := atomicfile.SyncDir(filepath.Dir(path)); err != nil {
			f.Close()
			return nil, err
		}
	}
	l := &appendLog{path: path, sync: durable, f: f, written: size, synced: size, lines: bytes.Count(data[:size], []byte("\n"))}
	l.cond = sync.NewCond(&l.mu)
	return l, nil
}

// append writes line (which ends in a newline) and returns once it is on
// stable storage.
func (l *appendLog) append(line []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writeLocked(line); err != nil {
		return err
	}
	mine := l.written
	if !l.sync {
		l.synced = mine
		return nil
	}
	for l.synced < mine {
		if l.syncing {
			l.cond.Wait()
			continue
		}
		l.syncing = true
		upTo := l.written
		f := l.f
		l.mu.Unlock()
		err := f.Sync()
		l.mu.Lock()
		l.syncing = false
		l.cond.Broadcast()
		if err != nil {
			return fmt.Errorf("syncing %s: %w", l.path, err)
		}
		l.synced = max(l.synced, upTo)
	}
	return nil
}

// appendLazy writes line (which ends in a newline) without waiting for it
// to reach stable storage: the next synced append, or the kernel's
// write-back, takes it there.
func (l *appendLog) appendLazy(line []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.writeLocked(line)
}

// writeLocked writes line at the end; l.mu is held.
func (l *appendLog) writeLocked(line []byte) error {
	if l.f == nil {
		return fmt.Errorf("%s: closed", l.path)
	}
	if _, err := l.f.WriteAt(line, l.written); err != nil {
		l.f.Truncate(l.written)
		return fmt.Errorf("appending to %s: %w", l.path, err)
	}
	l.written += int64(len(line))
	l.lines++
	return nil
}

// rewrite replaces the log's content with the lines keep returns (each
// without its newline), given all its complete lines, in one atomic
// step: a crash leaves the old content or the new, whole. Appends wait
// for it; the lines keep returns are written with the one atomic writer
// (durably if the log is) and the log goes on at their end.
func (l *appendLog) rewrite(keep func(lines [][]byte) [][]byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.syncing {
		l.cond.Wait()
	}
	if l.f == nil {
		return fmt.Errorf("%s: closed", l.path)
	}
	lines, err := l.linesLocked()
	if err != nil {
		return err
	}
	kept := keep(lines)
	var buf bytes.Buffer
	for _, line := range kept {
		buf.Write(line)
		buf.WriteByte('\n')
	}
	var opts []atomicfile.Option
	if !l.sync {
		opts = append(opts, atomicfile.NoSync())
	}
	w, err := atomicfile.Create(l.path, 0o600, opts...)
	if err != nil {
		return err
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		w.Abort()
		return err
	}
	// The log goes on in the new file from here, even if the directory's
	// fsync failed (the rename happened; either content is whole).
	f, err := w.CommitOpen()
	if f == nil {
		return err
	}
	synced := int64(buf.Len())
	if err != nil {
		synced = 0
	}
	l.f.Close()
	l.f, l.written, l.synced, l.lines = f, int64(buf.Len()), synced, len(kept)
	return err
}

// readAll returns the complete lines of the log, without their newlines.
func (l *appendLog) readAll() ([][]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.linesLocked()
}

// linesLocked is readAll with l.mu held.
func (l *appendLog) linesLocked() ([][]byte, error) {
	if l.f == nil {
		return nil, fmt.Errorf("%s: closed", l.path)
	}
	data := make([]byte, l.written)
	if _, err := l.f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if len(data) == 0 {
		return nil, nil
	}
	return bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")), nil
}

func (l *appendLog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.syncing {
		l.cond.Wait()
	}
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
