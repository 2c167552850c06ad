package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/blob"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/policy"
)

// MaxStoredInput bounds one input the node fetches from stores (a file
// of a directory included).
const MaxStoredInput = 4 << 30

// DefaultBlobCache bounds the stored-input cache when Options.BlobCache
// is zero.
const DefaultBlobCache = 16 << 30

// ErrBlobCacheFull: a fetched input does not fit in the cache even after
// every blob no running session holds was evicted.
var ErrBlobCacheFull = errors.New("blob cache full")

// blobCache holds stored inputs the node fetched, by digest, under
// DATA/blobs/sha256/<hex>: files and directory manifests. A file is there
// only once its bytes hashed to its digest (blob.Location.Fetch, committed
// through atomicfile), so a crash mid-fetch leaves nothing that could be
// taken for the input; and since a stored input's digest is its pinned
// SHA-256, that check is the pin's. Files are read-only to the node; they
// are not re-hashed at each run (whoever can alter the data directory is
// the operator, whom the software class trusts anyway).
//
// The cache is bounded (Options.BlobCache, --blob-cache): to make room it
// evicts the least recently used blobs, never one a running session holds
// (a lease, from the fetch until the run ends). A blob that cannot fit
// beside the held ones fails its run with ErrBlobCacheFull, naming the
// bound. Use order survives a restart through the files' modification
// times.
type blobCache struct {
	dir  string
	opts blob.Options
	max  int64
	sync bool
	log  *slog.Logger

	mu       sync.Mutex
	entries  map[blob.Digest]*cacheEntry
	used     int64  // bytes of the entries and of fetches in progress
	tick     uint64 // logical clock of uses
	inflight map[blob.Digest]*fetchLock
}

// fetchLock serializes the fetches of one digest; it is dropped when no
// acquire waits on it.
type fetchLock struct {
	sync.Mutex
	waiters int
}

type cacheEntry struct {
	size int64
	used uint64 // c.tick at the last use
	refs int    // leases held
}

func newBlobCache(dataDir string, max int64, doSync bool, log *slog.Logger) (*blobCache, error) {
	if max <= 0 {
		max = DefaultBlobCache
	}
	dir := filepath.Join(dataDir, "blobs", "sha256")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	c := &blobCache{dir: dir, max: max, sync: doSync, log: log,
		entries: map[blob.Digest]*cacheEntry{}, inflight: map[blob.Digest]*fetchLock{}}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// load takes stock of the cache directory: temporary files of fetches a
// crash interrupted are removed, blobs are ordered by modification time
// (their last use), and the least recently used go if the bound shrank.
func (c *blobCache) load() error {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("blob cache: %w", err)
	}
	type found struct {
		d     blob.Digest
		size  int64
		mtime time.Time
	}
	var fs []found
	for _, e := range ents {
		if ok, _ := filepath.Match(atomicfile.TempGlob, e.Name()); ok {
			os.Remove(filepath.Join(c.dir, e.Name()))
			continue
		}
		d, err := blob.ParseDigest("sha256:" + e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue // not the cache's; left alone
		}
		fi, err := e.Info()
		if err != nil {
			return fmt.Errorf("blob cache: %w", err)
		}
		fs = append(fs, found{d, fi.Size(), fi.ModTime()})
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].mtime.Before(fs[j].mtime) })
	for _, f := range fs {
		c.tick++
		c.entries[f.d] = &cacheEntry{size: f.size, used: c.tick}
		c.used += f.size
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evictLocked(0)
	return nil
}

func (c *blobCache) path(d blob.Digest) string { return filepath.Join(c.dir, d.Hex()) }

// evictLocked removes unheld blobs, least recently used first, until n more
// bytes fit, and reports whether they do. c.mu is held.
func (c *blobCache) evictLocked(n int64) bool {
	if c.used+n <= c.max {
		return true
	}
	var free []blob.Digest
	for d, e := range c.entries {
		if e.refs == 0 {
			free = append(free, d)
		}
	}
	sort.Slice(free, func(i, j int) bool { return c.entries[free[i]].used < c.entries[free[j]].used })
	for _, d := range free {
		if c.used+n <= c.max {
			break
		}
		if err := os.Remove(c.path(d)); err != nil && !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("blob cache: evicting", "digest", d, "err", err)
			continue
		}
		c.used -= c.entries[d].size
		delete(c.entries, d)
		c.log.Debug("blob cache: evicted", "digest", d)
	}
	return c.used+n <= c.max
}

// freeableLocked is the bytes eviction could free: blobs no run holds.
// The rest of c.used is held blobs and fetches in progress. c.mu is held.
func (c *blobCache) freeableLocked() int64 {
	var n int64
	for _, e := range c.entries {
		if e.refs == 0 {
			n += e.size
		}
	}
	return n
}

// heldLocked is the bytes running sessions hold. c.mu is held.
func (c *blobCache) heldLocked() int64 {
	var n int64
	for _, e := range c.entries {
		if e.refs > 0 {
			n += e.size
		}
	}
	return n
}

// lease is what one run holds of the cache: the blobs stay until release.
type lease struct {
	c   *blobCache
	ds  []blob.Digest
	one sync.Once
}

func (l *lease) release() {
	if l == nil {
		return
	}
	l.one.Do(func() {
		l.c.mu.Lock()
		defer l.c.mu.Unlock()
		for _, d := range l.ds {
			if e := l.c.entries[d]; e != nil {
				e.refs--
			}
		}
	})
}

// holdLocked takes one more lease on d if the cache has it. c.mu is held.
func (c *blobCache) holdLocked(d blob.Digest, l *lease) bool {
	e := c.entries[d]
	if e == nil {
		return false
	}
	e.refs++
	c.tick++
	e.used = c.tick
	l.ds = append(l.ds, d)
	return true
}

// acquire makes blob d present and held by l, fetching it with fetch
// unless the cache has it; concurrent acquires of one digest fetch once.
// fetch writes the blob into sinks that newSink makes for the size about
// to be written, committing one that matched d.
func (c *blobCache) acquire(d blob.Digest, l *lease, fetch func(newSink func(size int64) (blob.Sink, error)) error) error {
	c.mu.Lock()
	if c.holdLocked(d, l) {
		c.mu.Unlock()
		c.touch(d)
		return nil
	}
	m := c.inflight[d]
	if m == nil {
		m = new(fetchLock)
		c.inflight[d] = m
	}
	m.waiters++
	c.mu.Unlock()
	m.Lock()
	defer func() {
		m.Unlock()
		c.mu.Lock()
		if m.waiters--; m.waiters == 0 {
			delete(c.inflight, d)
		}
		c.mu.Unlock()
	}()
	c.mu.Lock()
	held := c.holdLocked(d, l) // fetched by whoever held the lock before
	c.mu.Unlock()
	if held {
		return nil
	}
	return fetch(func(size int64) (blob.Sink, error) { return c.newSink(d, size, l) })
}

// touch records a use in the file's modification time, so that the use
// order survives a restart (best effort).
func (c *blobCache) touch(d blob.Digest) {
	now := time.Now()
	os.Chtimes(c.path(d), now, now)
}

// newSink reserves room for size bytes, evicting as needed, and returns a
// file that becomes d, held by l, when committed.
func (c *blobCache) newSink(d blob.Digest, size int64, l *lease) (blob.Sink, error) {
	if size < 0 {
		return nil, fmt.Errorf("blob cache: negative size %d", size)
	}
	c.mu.Lock()
	// What cannot fit beside the held blobs is refused before anything
	// is evicted for it.
	if held := c.heldLocked(); size > c.max-(c.used-c.freeableLocked()) || !c.evictLocked(size) {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %s of %d bytes does not fit beside the %d bytes running sessions hold (limit %d bytes, --blob-cache)", ErrBlobCacheFull, d, size, held, c.max)
	}
	c.used += size
	c.mu.Unlock()
	var opts []atomicfile.Option
	if !c.sync {
		opts = append(opts, atomicfile.NoSync())
	}
	f, err := atomicfile.Create(c.path(d), 0o400, opts...)
	if err != nil {
		c.unreserve(size)
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	return &cacheSink{File: f, c: c, d: d, size: size, l: l}, nil
}

func (c *blobCache) unreserve(n int64) {
	c.mu.Lock()
	c.used -= n
	c.mu.Unlock()
}

// cacheSink is a blob being fetched into the cache.
type cacheSink struct {
	*atomicfile.File
	c    *blobCache
	d    blob.Digest
	size int64
	l    *lease
	done bool
}

func (s *cacheSink) Commit() error {
	s.done = true
	if err := s.File.Commit(); err != nil {
		s.c.unreserve(s.size)
		return err
	}
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.c.entries[s.d] != nil {
		// Cannot happen while fetches of a digest are serialized; the
		// file was replaced by the same bytes.
		s.c.used -= s.size
	} else {
		s.c.entries[s.d] = &cacheEntry{size: s.size}
	}
	s.c.holdLocked(s.d, s.l)
	return nil
}

func (s *cacheSink) Abort() {
	if s.done {
		return
	}
	s.done = true
	s.File.Abort()
	s.c.unreserve(s.size)
}

// fetchSealedProgram returns the path of a sealed program's ciphertext
// in the cache, fetched by its digest from the program's stores if the
// cache lacks it, held by l until l.release. Only ciphertext reaches the
// cache: the key goes to the worker alone.
func (c *blobCache) fetchSealedProgram(ctx context.Context, sp *policy.SealedProgram, l *lease) (string, error) {
	d, err := blob.ParseDigest(sp.Digest)
	if err != nil {
		return "", err
	}
	loc, err := blob.OpenLocation(sp.Stores, c.opts)
	if err != nil {
		return "", err
	}
	err = c.acquire(d, l, func(newSink func(int64) (blob.Sink, error)) error {
		_, _, err := loc.Fetch(ctx, d, MaxStoredInput, newSink)
		return err
	})
	if err != nil {
		return "", err
	}
	return c.path(d), nil
}

// inputFile is one file a stored input puts under /input.
type inputFile struct {
	name, path string
}

// fetchInput returns the files stored input in puts under /input — one
// file, or the files of a directory as NAME/FILE — fetching what the
// cache lacks from the input's stores (the first matching copy of each),
// held by l until l.release.
func (c *blobCache) fetchInput(ctx context.Context, in *policy.Input, l *lease) ([]inputFile, error) {
	d, err := blob.ParseDigest(in.From.Digest)
	if err != nil {
		return nil, err
	}
	if h, ok := in.PinnedSHA256(); !ok || blob.FromSum(h) != d {
		return nil, fmt.Errorf("stored input %q: digest %s is not its pinned sha256", in.Name, d)
	}
	loc, err := blob.OpenLocation(in.From.Stores, c.opts)
	if err != nil {
		return nil, err
	}
	fetchBlob := func(d blob.Digest, max int64) error {
		return c.acquire(d, l, func(newSink func(int64) (blob.Sink, error)) error {
			_, _, err := loc.Fetch(ctx, d, max, newSink)
			return err
		})
	}
	if !in.From.Directory {
		if err := fetchBlob(d, MaxStoredInput); err != nil {
			return nil, err
		}
		return []inputFile{{name: in.Name, path: c.path(d)}}, nil
	}
	// A directory: its manifest (checked by digest, which is the pin),
	// then each file by the digest the manifest names.
	err = c.acquire(d, l, func(newSink func(int64) (blob.Sink, error)) error {
		m, _, err := loc.FetchManifest(ctx, d)
		if err != nil {
			return err
		}
		if _, err := blob.ParseDirManifest(m); err != nil {
			return fmt.Errorf("stored directory %s: %w", d, err)
		}
		sink, err := newSink(int64(len(m)))
		if err != nil {
			return err
		}
		if _, err := sink.Write(m); err != nil {
			sink.Abort()
			return err
		}
		return sink.Commit()
	})
	if err != nil {
		return nil, err
	}
	mf, err := os.Open(c.path(d))
	if err != nil {
		return nil, fmt.Errorf("stored directory %s: %w", d, err)
	}
	m, err := io.ReadAll(io.LimitReader(mf, blob.MaxManifestLen+1))
	mf.Close()
	if err != nil {
		return nil, fmt.Errorf("stored directory %s: %w", d, err)
	}
	es, err := blob.ParseDirManifest(m)
	if err != nil {
		return nil, fmt.Errorf("stored directory %s: %w", d, err)
	}
	if len(es) > isolate.MaxInputFiles {
		return nil, fmt.Errorf("stored directory %q has %d files; a run takes at most %d input files in all", in.Name, len(es), isolate.MaxInputFiles)
	}
	var total int64
	for _, e := range es {
		total += e.Size
	}
	if total > c.max {
		return nil, fmt.Errorf("%w: stored directory %q holds %d bytes, more than the cache's limit of %d bytes (--blob-cache)", ErrBlobCacheFull, in.Name, total, c.max)
	}
	files := make([]inputFile, 0, len(es))
	for _, e := range es {
		if e.Size > MaxStoredInput {
			return nil, fmt.Errorf("stored directory %q: file %q is %d bytes, more than the %d a stored input may have", in.Name, e.Name, e.Size, MaxStoredInput)
		}
		if err := fetchBlob(e.Digest, e.Size); err != nil {
			return nil, fmt.Errorf("stored directory %q: file %q: %w", in.Name, e.Name, err)
		}
		if fi, err := os.Stat(c.path(e.Digest)); err != nil || fi.Size() != e.Size {
			return nil, fmt.Errorf("stored directory %q: file %q: the manifest says %d bytes, its blob has another size", in.Name, e.Name, e.Size)
		}
		files = append(files, inputFile{name: in.Name + "/" + e.Name, path: c.path(e.Digest)})
	}
	return files, nil
}
