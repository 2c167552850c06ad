package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/blob"
	"github.com/cloisterhq/cloister/blob/server"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/policy"
)

// cacheStore is a Cloister blob store on loopback that counts the blob
// reads it serves.
type cacheStore struct {
	url   string
	store *blob.Store
	gets  sync.Map // path → *atomic.Int64
}

func newCacheStore(t *testing.T) *cacheStore {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	srv, err := server.New(server.Options{Dir: t.TempDir(), Pushers: map[string]int64{keys.FormatSigningKey(key.Public().(ed25519.PublicKey)): 0},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	cs := &cacheStore{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			n, _ := cs.gets.LoadOrStore(r.URL.Path, new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
		}
		srv.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(func() { ts.Close(); srv.Close() })
	cs.url = ts.URL + "/data"
	if cs.store, err = blob.OpenStore(cs.url, blob.Options{Key: key}); err != nil {
		t.Fatal(err)
	}
	return cs
}

func (cs *cacheStore) put(t *testing.T, data []byte) blob.Digest {
	t.Helper()
	d := blob.FromBytes(data)
	if err := cs.store.PushBlob(context.Background(), d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return d
}

// reads is how many times the store served blob d.
func (cs *cacheStore) reads(d blob.Digest) int64 {
	n, ok := cs.gets.Load("/v2/data/blobs/" + string(d))
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

func (cs *cacheStore) input(name string, d blob.Digest) *policy.Input {
	return &policy.Input{Name: name, SHA256: d.Hex(), From: &policy.Source{Digest: string(d), Stores: []string{cs.url}}}
}

func newTestCache(t *testing.T, dir string, max int64) *blobCache {
	t.Helper()
	c, err := newBlobCache(dir, max, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fetch fetches d into c under a lease of its own, which it returns.
func fetch(t *testing.T, c *blobCache, cs *cacheStore, d blob.Digest) *lease {
	t.Helper()
	l := &lease{c: c}
	files, err := c.fetchInput(context.Background(), cs.input("in", d), l)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0].path != c.path(d) {
		t.Fatalf("files %+v", files)
	}
	return l
}

// cached lists which of ds the cache directory holds, as a string of
// letters (ds[0] is "A").
func cached(c *blobCache, ds ...blob.Digest) string {
	var b strings.Builder
	for i, d := range ds {
		if _, err := os.Stat(c.path(d)); err == nil {
			b.WriteByte(byte('A' + i))
		}
	}
	return b.String()
}

// TestBlobCacheEviction: the cache stays within its bound by evicting the
// least recently used blobs, never one a lease holds; a blob that cannot
// fit beside the held ones is refused, naming the limit, with nothing
// else lost. A restart keeps the use order and applies a smaller bound.
func TestBlobCacheEviction(t *testing.T) {
	cs := newCacheStore(t)
	var ds []blob.Digest
	for i := range 5 {
		ds = append(ds, cs.put(t, bytes.Repeat([]byte{byte('a' + i)}, 1000)))
	}
	A, B, C, D, E := ds[0], ds[1], ds[2], ds[3], ds[4]
	dir := t.TempDir()
	c := newTestCache(t, dir, 3000)

	for _, d := range []blob.Digest{A, B, C} {
		fetch(t, c, cs, d).release()
	}
	fetch(t, c, cs, A).release() // a use: A is now the most recent
	if cs.reads(A) != 1 {
		t.Fatalf("A read %d times from the store; the second use should come from the cache", cs.reads(A))
	}
	fetch(t, c, cs, D).release() // evicts B, the least recently used
	if got := cached(c, ds...); got != "ACD" {
		t.Fatalf("cache holds %s, want ACD", got)
	}

	// Held blobs stay whatever their age.
	la := fetch(t, c, cs, A)
	fetch(t, c, cs, E).release() // evicts C
	lb := fetch(t, c, cs, B)     // evicts D, not A
	if got := cached(c, ds...); got != "ABE" {
		t.Fatalf("cache holds %s, want ABE", got)
	}
	le := fetch(t, c, cs, E)
	_, err := c.fetchInput(context.Background(), cs.input("in", C), &lease{c: c})
	if !errors.Is(err, ErrBlobCacheFull) || !strings.Contains(err.Error(), "--blob-cache") || !strings.Contains(err.Error(), "3000 bytes running sessions hold") {
		t.Fatalf("fetch with the cache full of held blobs: %v", err)
	}
	if got := cached(c, ds...); got != "ABE" || c.used != 3000 {
		t.Fatalf("after the refusal the cache holds %s, %d bytes counted", got, c.used)
	}
	if tmp, _ := filepath.Glob(filepath.Join(c.dir, ".tmp-*")); len(tmp) != 0 {
		t.Fatalf("temporary files left: %v", tmp)
	}
	la.release()
	la.release()                 // a second release changes nothing
	fetch(t, c, cs, C).release() // A is no longer held: it goes
	if got := cached(c, ds...); got != "BCE" {
		t.Fatalf("cache holds %s, want BCE", got)
	}
	lb.release()
	le.release()
	for _, e := range c.entries {
		if e.refs != 0 {
			t.Fatalf("refs %d after every lease was released", e.refs)
		}
	}

	// A restart orders by the files' times and applies a smaller bound;
	// a fetch a crash interrupted is removed.
	old := time.Now().Add(-time.Hour)
	for i, d := range []blob.Digest{C, B, E} { // C oldest, E newest
		ts := old.Add(time.Duration(i) * time.Minute)
		os.Chtimes(c.path(d), ts, ts)
	}
	os.WriteFile(filepath.Join(c.dir, ".tmp-"+A.Hex()+"-123"), []byte("half"), 0o600)
	c2 := newTestCache(t, dir, 2000)
	if got := cached(c2, ds...); got != "BE" || c2.used != 2000 {
		t.Fatalf("after a restart with a 2000-byte bound the cache holds %s (%d bytes), want BE", got, c2.used)
	}
	if tmp, _ := filepath.Glob(filepath.Join(c2.dir, ".tmp-*")); len(tmp) != 0 {
		t.Fatalf("temporary files left after a restart: %v", tmp)
	}
	before := cs.reads(E)
	fetch(t, c2, cs, E).release()
	if cs.reads(E) != before {
		t.Fatal("a blob kept across the restart was fetched again")
	}
}

// TestBlobCacheFetchesOnce: sessions that need the same blob at once
// fetch it once and each hold it.
func TestBlobCacheFetchesOnce(t *testing.T) {
	cs := newCacheStore(t)
	d := cs.put(t, bytes.Repeat([]byte("weights "), 50_000))
	c := newTestCache(t, t.TempDir(), 1<<20)
	var wg sync.WaitGroup
	leases := make([]*lease, 8)
	for i := range leases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			leases[i] = fetch(t, c, cs, d)
		}()
	}
	wg.Wait()
	if n := cs.reads(d); n != 1 {
		t.Fatalf("the blob was read %d times from the store", n)
	}
	if e := c.entries[d]; e == nil || e.refs != len(leases) {
		t.Fatalf("entry %+v, want %d leases", e, len(leases))
	}
	for _, l := range leases {
		l.release()
	}
	if c.entries[d].refs != 0 || len(c.inflight) != 0 {
		t.Fatalf("refs %d, %d fetch locks left", c.entries[d].refs, len(c.inflight))
	}
}

// TestBlobCacheDirectory: a stored directory is its manifest (checked by
// the pinned digest) and its files, each fetched by digest and put under
// /input/NAME/FILE; one larger than the whole cache is refused before any
// file is fetched.
func TestBlobCacheDirectory(t *testing.T) {
	cs := newCacheStore(t)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "train.csv"), bytes.Repeat([]byte("x,y\n"), 300), 0o644)
	os.WriteFile(filepath.Join(src, "test.csv"), []byte("x,y\n1,2\n"), 0o644)
	md, err := cs.store.PushDir(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	c := newTestCache(t, t.TempDir(), 4000)
	in := cs.input("ds", md)
	in.From.Directory = true
	l := &lease{c: c}
	files, err := c.fetchInput(context.Background(), in, l)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || files[0].name != "ds/test.csv" || files[1].name != "ds/train.csv" {
		t.Fatalf("files %+v", files)
	}
	for _, f := range files {
		want, _ := os.ReadFile(filepath.Join(src, strings.TrimPrefix(f.name, "ds/")))
		if got, _ := os.ReadFile(f.path); !bytes.Equal(got, want) {
			t.Fatalf("%s holds other bytes", f.name)
		}
	}
	if len(l.ds) != 3 {
		t.Fatalf("the lease holds %d blobs, want the manifest and 2 files", len(l.ds))
	}
	l.release()

	// A file pinned as a directory is refused: its bytes are no manifest.
	fd := cs.put(t, []byte("not a manifest"))
	fin := cs.input("f", fd)
	fin.From.Directory = true
	if _, err := c.fetchInput(context.Background(), fin, &lease{c: c}); err == nil {
		t.Fatal("a plain blob taken for a directory")
	}

	small := newTestCache(t, t.TempDir(), 1000)
	if _, err := small.fetchInput(context.Background(), in, &lease{c: small}); !errors.Is(err, ErrBlobCacheFull) || !strings.Contains(err.Error(), "more than the cache's limit") {
		t.Fatalf("a directory larger than the cache: %v", err)
	}
}

// TestBlobCacheRefusalEvictsNothing: a blob that cannot fit beside the
// held ones is refused before any unheld blob is evicted for it.
func TestBlobCacheRefusalEvictsNothing(t *testing.T) {
	cs := newCacheStore(t)
	a := cs.put(t, bytes.Repeat([]byte{'a'}, 1000))
	b := cs.put(t, bytes.Repeat([]byte{'b'}, 1000))
	big := cs.put(t, bytes.Repeat([]byte{'z'}, 2500))
	c := newTestCache(t, t.TempDir(), 3000)
	la := fetch(t, c, cs, a)
	defer la.release()
	fetch(t, c, cs, b).release()
	_, err := c.fetchInput(context.Background(), cs.input("big", big), &lease{c: c})
	if !errors.Is(err, ErrBlobCacheFull) {
		t.Fatalf("2500 bytes beside 1000 held in a 3000-byte cache: %v", err)
	}
	if got := cached(c, a, b, big); got != "AB" || c.used != 2000 {
		t.Fatalf("after the refusal the cache holds %s (%d bytes), want AB", got, c.used)
	}
}
