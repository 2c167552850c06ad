package federation

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/cloisterhq/cloister/internal/prealloc"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// The call log (decision 0168). Before a call's result leaves, its counts
// (the initiator's of the model version, the plan's) and its signed
// receipt must be on disk. They go there as one record appended to a log
// made ahead of time (package prealloc: zeros written, synced, named), made
// durable by a single fdatasync. After the release, in the background,
// each record is applied to the files that keep the state for good — the
// receipt's file (receipts/ID, the outbox's) and the count files (plans/)
// — and a segment of the log whose records are all applied is removed. A
// holder that opens its directory first applies what the log holds, so a
// crash at any point loses no count and no receipt of a released result.
//
//	calls/SEQ-RAND.log  segments of records, each
//	                    [length uint32][CRC-32C uint32][JSON callRecord],
//	                    then zeros (where a reader stops)
//
// Replaying is idempotent and its order does not matter: a count is
// raised to at least the one recorded (counts only grow, and each
// record holds the count after its call), a receipt's file is written if
// missing.

// Bounds of the call log.
const (
	segmentBytes = 256 << 10
	spareSegs    = 2
	segSuffix    = ".log"
	recordHeader = 8
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// callRecord is what one answered call leaves in the log.
type callRecord struct {
	Call    string `json:"call"`
	Receipt []byte `json:"receipt"` // the signed model.called entry
	Usage   string `json:"usage"`   // usageKey of the call
	Count   uint64 `json:"count"`   // the initiator's count after the call
	Plan    string `json:"plan,omitempty"`
	Used    uint64 `json:"used,omitempty"` // the plan's count after the call
}

// segment is a file of the log.
type segment struct {
	f        prealloc.File
	appended int  // records appended
	applied  int  // of which applied
	sealed   bool // no more are appended
}

type callLog struct {
	dir   string
	pool  *prealloc.Pool
	ob    *outbox
	plans *plans
	log   *slog.Logger

	mu  sync.Mutex // the segment appended to and its offset
	cur *segment
	off int64

	qmu    sync.Mutex
	queue  []queued // appended, not applied yet
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	closed bool
}

type queued struct {
	seg *segment
	rec *callRecord
	se  *verify.SignedEntry
}

// openCallLog applies what the log in dir holds to ob's receipts and ps's
// counts, removes it, and starts a new one.
func openCallLog(dir string, ob *outbox, ps *plans, log *slog.Logger) (*callLog, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	l := &callLog{dir: dir, ob: ob, plans: ps, log: log, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if err := l.replay(); err != nil {
		return nil, err
	}
	var seq uint64
	var seqMu sync.Mutex
	l.pool = prealloc.NewPool(dir, spareSegs, segmentBytes, func() (string, error) {
		// Names sort by when they were made (for people reading the
		// directory; replay does not depend on order).
		var r [4]byte
		if _, err := rand.Read(r[:]); err != nil {
			return "", err
		}
		seqMu.Lock()
		seq++
		n := seq
		seqMu.Unlock()
		return fmt.Sprintf("%016x-%s%s", n, hex.EncodeToString(r[:]), segSuffix), nil
	})
	l.pool.Start()
	go l.apply()
	return l, nil
}

// replay applies every complete record of the log's segments, then
// removes them.
func (l *callLog) replay() error {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return err
	}
	var segs []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), segSuffix) && e.Type().IsRegular() {
			segs = append(segs, filepath.Join(l.dir, e.Name()))
		}
	}
	sort.Strings(segs)
	var recs []*callRecord
	for _, p := range segs {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		recs = append(recs, readRecords(b)...)
	}
	for _, r := range recs {
		se, err := verify.DecodeEntry(r.Receipt)
		if err != nil {
			return fmt.Errorf("receipt %s: %w", r.Call, err)
		}
		switch err := l.ob.keep(r.Call, r.Receipt); {
		case err == nil:
			l.ob.send(r.Call, se) // not on disk before: not sent either
		case !errors.Is(err, errReplayed):
			return fmt.Errorf("receipt %s: %w", r.Call, err)
		}
		l.plans.atLeast(r.Usage, r.Count, r.Plan, r.Used)
	}
	if err := l.plans.persistAll(recs); err != nil {
		return err
	}
	for _, p := range segs {
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	return nil
}

// readRecords returns the complete records of a segment, up to the first
// that is not (zeros, or one torn by a crash: never acknowledged).
func readRecords(b []byte) []*callRecord {
	var out []*callRecord
	for len(b) >= recordHeader {
		n := binary.BigEndian.Uint32(b)
		sum := binary.BigEndian.Uint32(b[4:])
		if n == 0 || uint64(n) > uint64(len(b)-recordHeader) {
			break
		}
		payload := b[recordHeader : recordHeader+int(n)]
		if crc32.Checksum(payload, castagnoli) != sum {
			break
		}
		var r callRecord
		if err := json.Unmarshal(payload, &r); err != nil || len(r.Call) != 64 || len(r.Receipt) == 0 {
			break
		}
		out = append(out, &r)
		b = b[recordHeader+int(n):]
	}
	return out
}

// append makes rec durable, with se its decoded receipt, unless its call
// id was answered before (errReplayed). Once it returns nil the call's
// counts and receipt survive a crash; the result may leave.
func (l *callLog) append(rec *callRecord, se *verify.SignedEntry) error {
	if !l.ob.claim(rec.Call) {
		return errReplayed
	}
	payload, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	frame := make([]byte, recordHeader+len(payload))
	binary.BigEndian.PutUint32(frame, uint32(len(payload)))
	binary.BigEndian.PutUint32(frame[4:], crc32.Checksum(payload, castagnoli))
	copy(frame[recordHeader:], payload)

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur != nil && l.off+int64(len(frame)) > segmentBytes && l.off > 0 {
		l.seal(l.cur)
		l.cur = nil
	}
	if l.cur == nil {
		f, ok := l.pool.Take()
		if !ok {
			made, err := l.pool.Make(1)
			if err != nil {
				return err
			}
			f = made[0]
		}
		l.cur, l.off = &segment{f: f}, 0
	}
	seg := l.cur
	if err := prealloc.WriteAt(seg.f.F, frame, l.off, segmentBytes); err != nil {
		// What the segment holds past its last record is unknown: no
		// more is appended to it. The call id stays claimed (its record
		// may be on disk after all).
		l.seal(seg)
		l.cur = nil
		return err
	}
	l.off += int64(len(frame))
	l.qmu.Lock()
	seg.appended++
	l.queue = append(l.queue, queued{seg: seg, rec: rec, se: se})
	l.qmu.Unlock()
	if l.off == int64(len(frame)) {
		l.pool.Refill() // a segment was taken: make the next, after this sync
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return nil
}

// seal marks seg as appended to no more, and removes it if every record
// it holds is applied (l.mu held).
func (l *callLog) seal(seg *segment) {
	l.qmu.Lock()
	seg.sealed = true
	done := seg.applied == seg.appended
	l.qmu.Unlock()
	if done {
		l.remove(seg)
	}
}

func (l *callLog) remove(seg *segment) {
	seg.f.F.Close()
	os.Remove(filepath.Join(l.dir, seg.f.Name))
}

// apply writes the appended records to the files that keep them, in
// batches, until the log is closed.
func (l *callLog) apply() {
	defer close(l.done)
	for {
		select {
		case <-l.stop:
			return
		case <-l.wake:
		}
		for {
			l.qmu.Lock()
			batch := l.queue
			l.queue = nil
			l.qmu.Unlock()
			if len(batch) == 0 {
				break
			}
			if err := l.applyBatch(batch); err != nil {
				// The records stay in the log (replayed at the next start)
				// and are tried again with the next call's.
				l.log.Warn("federation: applying the call log", "records", len(batch), "err", err)
				l.qmu.Lock()
				l.queue = append(batch, l.queue...)
				l.qmu.Unlock()
				break
			}
		}
	}
}

func (l *callLog) applyBatch(batch []queued) error {
	recs := make([]*callRecord, len(batch))
	for i, q := range batch {
		recs[i] = q.rec
		if err := l.ob.keep(q.rec.Call, q.rec.Receipt); err != nil && !errors.Is(err, errReplayed) {
			return err
		}
	}
	if err := l.plans.persistAll(recs); err != nil {
		return err
	}
	var gone []*segment
	l.qmu.Lock()
	for _, q := range batch {
		q.seg.applied++
		if q.seg.sealed && q.seg.applied == q.seg.appended {
			gone = append(gone, q.seg)
		}
	}
	l.qmu.Unlock()
	for _, q := range batch {
		l.ob.unclaim(q.rec.Call) // its receipt's file guards it now
	}
	for _, seg := range gone {
		l.remove(seg)
	}
	return nil
}

// close stops applying; what is not applied yet is applied when the
// directory is opened again. The segments made ahead are removed.
func (l *callLog) close() {
	l.qmu.Lock()
	if l.closed {
		l.qmu.Unlock()
		return
	}
	l.closed = true
	l.qmu.Unlock()
	close(l.stop)
	<-l.done
	l.pool.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur != nil {
		l.cur.f.F.Close()
		l.cur = nil
	}
}
