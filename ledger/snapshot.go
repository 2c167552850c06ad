package ledger

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	abci "github.com/cometbft/cometbft/abci/types"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Snapshots of the application's state, for a validator that joins late
// (or lost its disk) when the blocks from genesis are pruned: CometBFT's
// state sync fetches a recent snapshot from peers, the application checks
// and restores it, and the node follows blocks from the snapshot's height
// on (decision 0156).
//
// A snapshot is the store's every bucket at a committed height, written as
// one deterministic stream (buckets by name, keys in order), so that
// validators with the same state produce the same bytes and the same
// snapshot hash, and CometBFT can fetch chunks from any of them:
//
//	stream  = "cloister-ledger-snapshot/1\n" { bucket } "E"
//	bucket  = "B" uvarint(len) name { "K" uvarint(len) key uvarint(len) value }
//
// with every entry in its plain stored form, be64(height) ‖ tx, and every
// stored hash, leaf hashes included, whatever form the store keeps them
// in (entrystore.go, tree.go). Format 2 is the stream of a store whose
// replay index is keyed by hash, with its submitters bucket (nonces.go);
// format 1 of one keyed by (submitter, nonce).
//
// cut into chunks of snapshotChunkSize bytes. The metadata lists the
// SHA-256 of every chunk; the snapshot's hash is the SHA-256 of that list.
// A restoring node checks each chunk against its hash as it arrives, and
// the whole state before it takes it: the log's root, recomputed from the
// restored Merkle hashes and every entry's leaf, must be the app hash the
// light client verified at that height.

const (
	// snapshotFormat is the format of a store whose replay index is keyed
	// by hash (nonces.go): format 1 with the submitters bucket. A node
	// that knows only format 1 refuses it rather than read its nonces
	// wrong. Stores from before keep writing format 1.
	snapshotFormat    = 2
	snapshotFormatOld = 1
	snapshotMagic     = "cloister-ledger-snapshot/1\n"
	snapshotChunkSize = 4 << 20
	// snapshotMaxChunks bounds what a peer's snapshot metadata may ask a
	// restoring node to fetch and keep (64 GiB).
	snapshotMaxChunks = 1 << 14
	snapshotDir       = "snapshots"
)

// snapshotMeta is a snapshot's metadata (abci.Snapshot.Metadata, JSON).
type snapshotMeta struct {
	Chunks [][]byte `json:"chunks"` // SHA-256 of each chunk
	Size   uint64   `json:"size"`   // log size at the height
}

func (m snapshotMeta) hash() []byte {
	h := sha256.New()
	for _, c := range m.Chunks {
		h.Write(c)
	}
	return h.Sum(nil)
}

// snapshots keeps this node's snapshots on disk, under data/snapshots:
// H.snap (the stream) and H.json (its abci.Snapshot).
type snapshots struct {
	dir      string
	interval int64 // take one every interval blocks; 0: never
	keep     int   // how many to keep

	mu   sync.Mutex
	list []*abci.Snapshot // by height, oldest first
	busy atomic.Bool      // a snapshot is being written
	done chan struct{}    // closed and replaced when a snapshot is written (tests)

	// restore is the snapshot being restored (snapshot connection only).
	restore *restoring
}

type restoring struct {
	snap    *abci.Snapshot
	meta    snapshotMeta
	appHash []byte
	next    uint32
	file    *os.File
}

func openSnapshots(dataDir string, interval int64, keep int) (*snapshots, error) {
	s := &snapshots{dir: filepath.Join(dataDir, snapshotDir), interval: max(interval, 0), keep: max(keep, 1), done: make(chan struct{})}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("ledger snapshots: %w", err)
	}
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("ledger snapshots: %w", err)
	}
	for _, de := range des {
		name := de.Name()
		if !strings.HasSuffix(name, ".json") {
			if strings.HasSuffix(name, ".tmp") || strings.HasPrefix(name, ".tmp-") {
				os.Remove(filepath.Join(s.dir, name)) // a snapshot or restore cut short
			}
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			return nil, fmt.Errorf("ledger snapshots: %w", err)
		}
		var snap abci.Snapshot
		if err := json.Unmarshal(b, &snap); err != nil {
			return nil, fmt.Errorf("ledger snapshots: %s: %w", name, err)
		}
		s.list = append(s.list, &snap)
	}
	slices.SortFunc(s.list, func(a, b *abci.Snapshot) int { return int(a.Height) - int(b.Height) })
	// A stream whose metadata was never written (a crash between the
	// two) is offered to nobody: drop it.
	for _, de := range des {
		if h, ok := strings.CutSuffix(de.Name(), ".snap"); ok {
			if _, err := os.Stat(filepath.Join(s.dir, h+".json")); errors.Is(err, os.ErrNotExist) {
				os.Remove(filepath.Join(s.dir, de.Name()))
			}
		}
	}
	return s, nil
}

func (s *snapshots) path(height uint64, ext string) string {
	return filepath.Join(s.dir, strconv.FormatUint(height, 10)+ext)
}

// due reports whether a snapshot is to be taken after committing height h.
func (s *snapshots) due(h int64) bool {
	return s != nil && s.interval > 0 && h > 0 && h%s.interval == 0
}

// floor is the height of the oldest snapshot kept after height h, as the
// schedule has it (a snapshot still being written counts), when snapshots
// are taken.
func (s *snapshots) floor(h int64) (int64, bool) {
	if s == nil || s.interval <= 0 {
		return 0, false
	}
	return max((h/s.interval-int64(s.keep-1))*s.interval, 0), true
}

// take writes a snapshot of the store as it is now (height h), unless one
// is being written; then it drops the oldest beyond keep. It runs beside
// consensus, in one read transaction.
func (s *snapshots) take(st *store, h int64, logErr func(error)) {
	if !s.busy.CompareAndSwap(false, true) {
		return
	}
	// The read transaction begins now, at height h; the copy runs beside
	// the next blocks.
	tx, err := st.db.Begin(false)
	if err != nil {
		s.busy.Store(false)
		logErr(fmt.Errorf("ledger snapshot of height %d: %w", h, err))
		return
	}
	go func() {
		defer s.busy.Store(false)
		snap, err := s.write(reader{tx}, h)
		tx.Rollback()
		if err != nil {
			logErr(err)
			return
		}
		s.mu.Lock()
		s.list = append(s.list, snap)
		var drop []*abci.Snapshot
		if n := len(s.list) - s.keep; n > 0 {
			drop = slices.Clone(s.list[:n])
			s.list = slices.Delete(s.list, 0, n)
		}
		close(s.done)
		s.done = make(chan struct{})
		s.mu.Unlock()
		for _, d := range drop {
			os.Remove(s.path(d.Height, ".json"))
			os.Remove(s.path(d.Height, ".snap"))
		}
	}()
}

func (s *snapshots) write(r reader, h int64) (*abci.Snapshot, error) {
	f, err := atomicfile.Create(s.path(uint64(h), ".snap"), 0o600)
	if err != nil {
		return nil, fmt.Errorf("ledger snapshot: %w", err)
	}
	defer f.Abort()
	cw := &chunkWriter{w: bufio.NewWriterSize(f, 1<<20), h: sha256.New()}
	var meta snapshotMeta
	cst, err := r.state()
	if err == nil && cst.Height != h {
		err = fmt.Errorf("the store is at height %d, not %d", cst.Height, h)
	}
	if err == nil {
		meta.Size = cst.Size
		err = writeSnapshotStream(r.tx, cw)
	}
	if err == nil {
		err = cw.finish()
	}
	if err == nil {
		err = f.Commit()
	}
	if err != nil {
		return nil, fmt.Errorf("ledger snapshot of height %d: %w", h, err)
	}
	meta.Chunks = cw.sums
	mb, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	format := uint32(snapshotFormatOld)
	if r.hashedNonces() {
		format = snapshotFormat
	}
	snap := &abci.Snapshot{Height: uint64(h), Format: format, Chunks: uint32(len(meta.Chunks)), Hash: meta.hash(), Metadata: mb}
	sb, err := json.Marshal(snap)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(s.path(snap.Height, ".json"), sb, 0o600); err != nil {
		return nil, fmt.Errorf("ledger snapshot: %w", err)
	}
	return snap, nil
}

// writeSnapshotStream writes every bucket of tx, by name, keys in order.
func writeSnapshotStream(tx *bolt.Tx, w io.Writer) error {
	if _, err := io.WriteString(w, snapshotMagic); err != nil {
		return err
	}
	var names []string
	err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		names = append(names, string(name))
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(names)
	var buf []byte
	for _, name := range names {
		buf = append(buf[:0], 'B')
		buf = appendBytes(buf, []byte(name))
		if _, err := w.Write(buf); err != nil {
			return err
		}
		if name == string(bucketHashes) {
			if err := writeSnapshotHashes(tx, w); err != nil {
				return err
			}
			continue
		}
		c := tx.Bucket([]byte(name)).Cursor()
		var prev *storedEntry
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if name == string(bucketEntries) {
				// The stream carries every entry plain, however this
				// store keeps it (entrystore.go), so that its bytes
				// depend on the state alone. Entries are in log order:
				// each one's predecessor is the one before.
				e, ok := decodeStoredEntry(v, func() (*storedEntry, bool) { return prev, prev != nil })
				if !ok {
					return fmt.Errorf("entry %x: unreadable stored form", k)
				}
				prev = &e
				v = plainEntry(e.height, e.tx)
			}
			buf = append(buf[:0], 'K')
			buf = appendBytes(appendBytes(buf, k), v)
			if _, err := w.Write(buf); err != nil {
				return err
			}
		}
	}
	_, err = w.Write([]byte{'E'})
	return err
}

// writeSnapshotHashes writes every stored hash of the log, leaf hashes
// included, whether this store keeps them (before decision 0173) or reads
// them from the entries.
func writeSnapshotHashes(tx *bolt.Tx, w io.Writer) error {
	size, _ := getU64(tx.Bucket(bucketMeta).Get(metaSize))
	r := reader{tx}
	c := tx.Bucket(bucketHashes).Cursor()
	k, v := c.First()
	var buf []byte
	for x := range tlog.StoredHashCount(int64(size)) {
		key := be64(uint64(x))
		val := v
		if bytes.Equal(k, key) {
			k, v = c.Next()
		} else {
			hs, err := r.hashes().ReadHashes([]int64{x})
			if err != nil {
				return err
			}
			val = hs[0][:]
		}
		buf = append(buf[:0], 'K')
		buf = appendBytes(appendBytes(buf, key), val)
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	if k != nil {
		return fmt.Errorf("stored hash %x beyond the log of %d entries", k, size)
	}
	return nil
}

func appendBytes(buf, b []byte) []byte {
	return append(binary.AppendUvarint(buf, uint64(len(b))), b...)
}

// chunkWriter hashes what it writes in chunks of snapshotChunkSize.
type chunkWriter struct {
	w    *bufio.Writer
	h    hash.Hash
	n    int
	sums [][]byte
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		k := min(len(p), snapshotChunkSize-c.n)
		if _, err := c.w.Write(p[:k]); err != nil {
			return 0, err
		}
		c.h.Write(p[:k])
		c.n += k
		p = p[k:]
		if c.n == snapshotChunkSize {
			c.sums = append(c.sums, c.h.Sum(nil))
			c.h.Reset()
			c.n = 0
		}
	}
	return total, nil
}

func (c *chunkWriter) finish() error {
	if c.n > 0 {
		c.sums = append(c.sums, c.h.Sum(nil))
	}
	return c.w.Flush()
}

// ListSnapshots offers the kept snapshots to peers that state sync.
func (a *app) ListSnapshots(context.Context, *abci.ListSnapshotsRequest) (*abci.ListSnapshotsResponse, error) {
	if a.snaps == nil {
		return &abci.ListSnapshotsResponse{}, nil
	}
	a.snaps.mu.Lock()
	defer a.snaps.mu.Unlock()
	return &abci.ListSnapshotsResponse{Snapshots: slices.Clone(a.snaps.list)}, nil
}

// LoadSnapshotChunk reads one chunk of a kept snapshot; nothing if the
// snapshot is gone (CometBFT then asks another peer).
func (a *app) LoadSnapshotChunk(_ context.Context, req *abci.LoadSnapshotChunkRequest) (*abci.LoadSnapshotChunkResponse, error) {
	if a.snaps == nil || req.Format != snapshotFormat && req.Format != snapshotFormatOld {
		return &abci.LoadSnapshotChunkResponse{}, nil
	}
	a.snaps.mu.Lock()
	var snap *abci.Snapshot
	for _, s := range a.snaps.list {
		if s.Height == req.Height {
			snap = s
		}
	}
	a.snaps.mu.Unlock()
	if snap == nil || req.Chunk >= snap.Chunks {
		return &abci.LoadSnapshotChunkResponse{}, nil
	}
	f, err := os.Open(a.snaps.path(req.Height, ".snap"))
	if err != nil {
		return &abci.LoadSnapshotChunkResponse{}, nil
	}
	defer f.Close()
	buf := make([]byte, snapshotChunkSize)
	n, err := f.ReadAt(buf, int64(req.Chunk)*snapshotChunkSize)
	if err != nil && !errors.Is(err, io.EOF) {
		return &abci.LoadSnapshotChunkResponse{}, nil
	}
	return &abci.LoadSnapshotChunkResponse{Chunk: buf[:n]}, nil
}

// OfferSnapshot accepts a snapshot to restore if this node has no state
// yet and the snapshot's metadata is well formed; req.AppHash is the app
// hash at the snapshot's height, as CometBFT's light client verified it.
func (a *app) OfferSnapshot(_ context.Context, req *abci.OfferSnapshotRequest) (*abci.OfferSnapshotResponse, error) {
	reject := func(r abci.OfferSnapshotResult, why string) (*abci.OfferSnapshotResponse, error) {
		a.logger.Error("ledger: refusing a snapshot", "height", req.GetSnapshot().GetHeight(), "reason", why)
		return &abci.OfferSnapshotResponse{Result: r}, nil
	}
	if a.snaps == nil {
		return reject(abci.OFFER_SNAPSHOT_RESULT_ABORT, "snapshots are not enabled on this node")
	}
	if st, _ := a.state(); st.Height > 0 {
		return reject(abci.OFFER_SNAPSHOT_RESULT_ABORT, fmt.Sprintf("the store already holds height %d", st.Height))
	}
	snap := req.Snapshot
	if snap == nil || snap.Format != snapshotFormat && snap.Format != snapshotFormatOld {
		return reject(abci.OFFER_SNAPSHOT_RESULT_REJECT_FORMAT, "unknown snapshot format")
	}
	var meta snapshotMeta
	if err := json.Unmarshal(snap.Metadata, &meta); err != nil {
		return reject(abci.OFFER_SNAPSHOT_RESULT_REJECT, "metadata: "+err.Error())
	}
	switch {
	case snap.Chunks == 0 || snap.Chunks > snapshotMaxChunks:
		return reject(abci.OFFER_SNAPSHOT_RESULT_REJECT, fmt.Sprintf("%d chunks, want 1 to %d", snap.Chunks, snapshotMaxChunks))
	case len(meta.Chunks) != int(snap.Chunks):
		return reject(abci.OFFER_SNAPSHOT_RESULT_REJECT, "metadata lists another number of chunks")
	case !bytes.Equal(meta.hash(), snap.Hash):
		return reject(abci.OFFER_SNAPSHOT_RESULT_REJECT, "the snapshot hash is not the hash of its chunk list")
	case len(req.AppHash) != sha256.Size:
		return reject(abci.OFFER_SNAPSHOT_RESULT_REJECT, "no app hash to check the snapshot against")
	}
	for _, c := range meta.Chunks {
		if len(c) != sha256.Size {
			return reject(abci.OFFER_SNAPSHOT_RESULT_REJECT, "a chunk hash is not SHA-256")
		}
	}
	a.snaps.abortRestore()
	f, err := os.OpenFile(filepath.Join(a.snaps.dir, "restore.tmp"), os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ledger snapshot restore: %w", err)
	}
	a.snaps.restore = &restoring{snap: snap, meta: meta, appHash: bytes.Clone(req.AppHash), file: f}
	a.logger.Info("ledger: restoring a snapshot", "height", snap.Height, "chunks", snap.Chunks)
	return &abci.OfferSnapshotResponse{Result: abci.OFFER_SNAPSHOT_RESULT_ACCEPT}, nil
}

func (s *snapshots) abortRestore() {
	if r := s.restore; r != nil {
		r.file.Close()
		os.Remove(r.file.Name())
		s.restore = nil
	}
}

// ApplySnapshotChunk checks a chunk against its hash and keeps it; after
// the last one it restores the store from the whole stream, if the
// restored log's root is the verified app hash.
func (a *app) ApplySnapshotChunk(_ context.Context, req *abci.ApplySnapshotChunkRequest) (*abci.ApplySnapshotChunkResponse, error) {
	r := a.snaps.restoreOrNil()
	if r == nil {
		return &abci.ApplySnapshotChunkResponse{Result: abci.APPLY_SNAPSHOT_CHUNK_RESULT_ABORT}, nil
	}
	if req.Index != r.next {
		// CometBFT applies chunks in order; ask again for the one expected.
		return &abci.ApplySnapshotChunkResponse{Result: abci.APPLY_SNAPSHOT_CHUNK_RESULT_RETRY, RefetchChunks: []uint32{r.next}}, nil
	}
	if sum := sha256.Sum256(req.Chunk); !bytes.Equal(sum[:], r.meta.Chunks[req.Index]) ||
		len(req.Chunk) > snapshotChunkSize || len(req.Chunk) == 0 {
		a.logger.Error("ledger: a snapshot chunk does not match its hash", "height", r.snap.Height, "chunk", req.Index, "sender", req.Sender)
		res := &abci.ApplySnapshotChunkResponse{Result: abci.APPLY_SNAPSHOT_CHUNK_RESULT_RETRY, RefetchChunks: []uint32{req.Index}}
		if req.Sender != "" {
			res.RejectSenders = []string{req.Sender}
		}
		return res, nil
	}
	if _, err := r.file.Write(req.Chunk); err != nil {
		a.snaps.abortRestore()
		return nil, fmt.Errorf("ledger snapshot restore: %w", err)
	}
	r.next++
	if r.next < r.snap.Chunks {
		return &abci.ApplySnapshotChunkResponse{Result: abci.APPLY_SNAPSHOT_CHUNK_RESULT_ACCEPT}, nil
	}
	err := a.restoreFrom(r)
	a.snaps.abortRestore()
	if err != nil {
		a.logger.Error("ledger: refusing a snapshot", "height", r.snap.Height, "reason", err)
		return &abci.ApplySnapshotChunkResponse{Result: abci.APPLY_SNAPSHOT_CHUNK_RESULT_REJECT_SNAPSHOT}, nil
	}
	a.logger.Info("ledger: snapshot restored", "height", r.snap.Height)
	return &abci.ApplySnapshotChunkResponse{Result: abci.APPLY_SNAPSHOT_CHUNK_RESULT_ACCEPT}, nil
}

func (s *snapshots) restoreOrNil() *restoring {
	if s == nil {
		return nil
	}
	return s.restore
}

// restoreFrom replaces the store's content with the snapshot's, in one
// bbolt transaction that commits only if the result checks out.
func (a *app) restoreFrom(r *restoring) error {
	if _, err := r.file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	err := a.store.db.Update(func(tx *bolt.Tx) error {
		if err := readSnapshotStream(tx, bufio.NewReaderSize(r.file, 1<<20)); err != nil {
			return err
		}
		hashed := reader{tx}.hashedNonces()
		if hashed != (r.snap.Format == snapshotFormat) {
			return fmt.Errorf("a snapshot of format %d with a hashed replay index: %v", r.snap.Format, hashed)
		}
		keyLen := ed25519.PublicKeySize + 8
		if hashed {
			keyLen = nonceHashSize
		}
		c := tx.Bucket(bucketNonces).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if len(k) != keyLen {
				return fmt.Errorf("a replay index key of %d bytes in a snapshot of format %d", len(k), r.snap.Format)
			}
		}
		return checkRestored(reader{tx}, int64(r.snap.Height), r.appHash)
	})
	if err != nil {
		return err
	}
	return a.load()
}

// readSnapshotStream empties tx's buckets and fills them from the stream.
func readSnapshotStream(tx *bolt.Tx, br *bufio.Reader) error {
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return errors.New("not a ledger snapshot stream")
	}
	known := map[string]bool{string(bucketSubmitters): true}
	if err := tx.DeleteBucket(bucketSubmitters); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
		return err
	}
	for _, b := range allBuckets {
		known[string(b)] = true
		if err := tx.DeleteBucket(b); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
			return err
		}
		if _, err := tx.CreateBucket(b); err != nil {
			return err
		}
	}
	var bk *bolt.Bucket
	var last []byte
	var prevEntry *storedEntry
	entries, hashes := tx.Bucket(bucketEntries), tx.Bucket(bucketHashes)
	seen := map[string]bool{}
	for {
		tag, err := br.ReadByte()
		if err != nil {
			return fmt.Errorf("snapshot stream: %w", err)
		}
		switch tag {
		case 'E':
			if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
				return errors.New("snapshot stream: bytes after its end")
			}
			return nil
		case 'B':
			name, err := readBytes(br, 64)
			if err != nil {
				return err
			}
			if !known[string(name)] || seen[string(name)] {
				return fmt.Errorf("snapshot stream: unknown or repeated bucket %q", name)
			}
			seen[string(name)] = true
			if bytes.Equal(name, bucketSubmitters) {
				if _, err := tx.CreateBucket(name); err != nil {
					return err
				}
			}
			bk, last = tx.Bucket(name), nil
			if appendOnly[string(name)] {
				bk.FillPercent = 1.0
			}
		case 'K':
			if bk == nil {
				return errors.New("snapshot stream: a key outside any bucket")
			}
			k, err := readBytes(br, bolt.MaxKeySize)
			if err != nil {
				return err
			}
			v, err := readBytes(br, bolt.MaxValueSize)
			if err != nil {
				return err
			}
			if len(k) == 0 || last != nil && bytes.Compare(k, last) <= 0 {
				return errors.New("snapshot stream: keys out of order")
			}
			if bk == hashes {
				if len(k) != 8 || len(v) != tlog.HashSize {
					return fmt.Errorf("snapshot stream: a stored hash %x of %d bytes", k, len(v))
				}
				x, _ := getU64(k)
				if level, n := tlog.SplitStoredHashIndex(int64(x)); level == 0 {
					// A leaf hash: checked against its entry (which the
					// stream carries before, buckets being in name order),
					// not kept (decision 0173).
					e, ok := loadStoredEntry(func(i uint64) []byte { return entries.Get(be64(i)) }, uint64(n))
					if leaf := verify.LeafHash(e.tx); !ok || !bytes.Equal(leaf[:], v) {
						return fmt.Errorf("snapshot stream: entry %d's leaf hash is not the streamed one", n)
					}
					last = k
					continue
				}
			}
			if bk == entries {
				if len(v) < 8 {
					return fmt.Errorf("snapshot stream: entry %x of %d bytes", k, len(v))
				}
				h, _ := getU64(v)
				// Keys in order: the entry before is the last one put,
				// when it is this one's predecessor.
				if i, _ := getU64(k); prevEntry != nil && (len(k) != 8 || i == 0 || !bytes.Equal(last, be64(i-1))) {
					prevEntry = nil
				}
				var cur storedEntry
				v, cur = storedEntryValue(int64(h), v[8:], nil, prevEntry)
				prevEntry = &cur
			}
			if err := bk.Put(k, v); err != nil {
				return err
			}
			last = k
		default:
			return fmt.Errorf("snapshot stream: unknown record %q", tag)
		}
	}
}

func readBytes(br *bufio.Reader, limit int) ([]byte, error) {
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return nil, fmt.Errorf("snapshot stream: %w", err)
	}
	if n > uint64(limit) {
		return nil, fmt.Errorf("snapshot stream: a record of %d bytes, over %d", n, limit)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		return nil, fmt.Errorf("snapshot stream: %w", err)
	}
	return b, nil
}

// checkRestored checks a restored store: it is at height h, holds
// exactly its log's entries, each entry's leaf hash is the stored one,
// and the root over the stored hashes is the stored root and appHash.
func checkRestored(r reader, h int64, appHash []byte) error {
	st, err := r.state()
	if err != nil {
		return err
	}
	if st.Height != h {
		return fmt.Errorf("the snapshot's state is of height %d, offered as %d", st.Height, h)
	}
	if !bytes.Equal(st.Root[:], appHash) {
		return fmt.Errorf("the snapshot's log root %x is not the chain's app hash %x", st.Root[:], appHash)
	}
	if k, _ := r.tx.Bucket(bucketEntries).Cursor().Last(); st.Size == 0 && k != nil || st.Size > 0 && !bytes.Equal(k, be64(st.Size-1)) {
		return fmt.Errorf("the snapshot holds entries beyond its log of %d", st.Size)
	}
	next := uint64(0)
	var leafErr error
	bad, ok := r.entriesFrom(0, func(i uint64, e *storedEntry) bool {
		if i != next {
			return false
		}
		leaf := verify.LeafHash(e.tx)
		// Leaf hashes were checked as the stream was read and are not
		// kept; one that is (a store from before decision 0173) must match.
		if got := r.get(bucketHashes, be64(uint64(tlog.StoredHashIndex(0, int64(i))))); got != nil && !bytes.Equal(got, leaf[:]) {
			leafErr = fmt.Errorf("entry %d's leaf hash is not the stored one", i)
			return false
		}
		next++
		return true
	})
	switch {
	case leafErr != nil:
		return leafErr
	case !ok:
		return fmt.Errorf("the snapshot's entry %d is unreadable", bad)
	case next != st.Size:
		return fmt.Errorf("the snapshot lacks entry %d", next)
	}
	root, err := treeRoot(st.Size, r.hashes())
	if err != nil {
		return err
	}
	if root != st.Root {
		return fmt.Errorf("the stored hashes give root %x, the snapshot says %x", root[:], st.Root[:])
	}
	if _, ok, err := r.chain(); err != nil || !ok {
		return fmt.Errorf("the snapshot's chain information: ok=%v %v", ok, err)
	}
	return nil
}
