package ledgerbench

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

func TestMain(m *testing.M) {
	if home := os.Getenv(validatorHomeEnv); home != "" {
		os.Exit(validatorProcessMain(home))
	}
	code := m.Run()
	closeShared()
	os.Exit(code)
}

// payload makes every entry's transaction about 400 bytes: a note whose
// body is the size of a typical session event (ids, a policy hash, an event
// name). The exact size is reported as the tx-bytes metric.
const payload = "session=8f2c1a7e4b9d; event=session.created; policy=3b1f9a0c52e7d4a8b6c0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6"

// signers hands out entries from a fixed pool of submitter keys, each
// (key, nonce) pair used once, signed with the current time. Signing is
// the submitters' cost, not the ledger's: benchmarks sign before the
// clock starts.
type signers struct {
	keys  []ed25519.PrivateKey
	nonce *atomic.Uint64 // shared with batched's signers
	// batch > 1: entries are batch-signed, that many under one signature
	// per key (rule version 18, decision 0175).
	batch int
}

// batched returns signers over the same keys and nonces that sign in
// batches of n.
func (s *signers) batched(n int) *signers {
	return &signers{keys: s.keys, nonce: s.nonce, batch: n}
}

func newSigners(tb testing.TB, n int) *signers {
	s := &signers{nonce: new(atomic.Uint64)}
	for range n {
		_, k, err := ed25519.GenerateKey(nil)
		if err != nil {
			tb.Fatal(err)
		}
		s.keys = append(s.keys, k)
	}
	return s
}

// sign makes n fresh entries, spread over the keys, using every CPU.
func (s *signers) sign(tb testing.TB, n int) []*verify.SignedEntry {
	out, err := s.signErr(n)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func (s *signers) signErr(n int) ([]*verify.SignedEntry, error) {
	out := make([]*verify.SignedEntry, n)
	base := s.nonce.Add(uint64(n)) - uint64(n)
	now := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Value
	workers := runtime.GOMAXPROCS(0)
	per := max(s.batch, 1)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lo := w * per; lo < n; lo += workers * per {
				items := make([]verify.BatchItem, min(per, n-lo))
				for j := range items {
					seq := base + uint64(lo+j)
					body := `{"seq":` + strconv.FormatUint(seq, 10) + `,"text":"` + payload + `"}`
					items[j] = verify.BatchItem{Kind: ledger.KindNote, Body: []byte(body), Nonce: seq + 1, Time: now}
				}
				ses, err := verify.SignBatch(s.keys[(int(base)+lo)/per%len(s.keys)], items)
				if err != nil {
					failed.Store(err)
					return
				}
				copy(out[lo:], ses)
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return nil, err
	}
	return out, nil
}

// txBytes is the mean transaction size of entries.
func txBytes(entries []*verify.SignedEntry) float64 {
	var n int
	for _, e := range entries {
		n += len(e.Encode())
	}
	return float64(n) / float64(len(entries))
}

// httpClient keeps enough idle connections for every concurrent submitter,
// so that the benchmark measures the ledger, not TCP handshakes.
func httpClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 1024
	tr.MaxIdleConnsPerHost = 1024
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}
}

func newClient(tb testing.TB, url string) *client.Client {
	c, err := client.New(url, client.WithHTTPClient(httpClient()))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// embedded is one embedded ledger in a temporary directory with its API
// served on loopback.
type embedded struct {
	dir string
	l   *ledger.Embedded
	srv *httptest.Server
	c   *client.Client
}

// openEmbedded opens a fresh embedded ledger. The caller closes it (close
// is idempotent); tb's cleanup closes it too.
func openEmbedded(tb testing.TB, dir string) *embedded {
	return openEmbeddedWith(tb, dir, ledger.EmbeddedOptions{ChainID: "bench-embedded"})
}

func openEmbeddedWith(tb testing.TB, dir string, opts ledger.EmbeddedOptions) *embedded {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := ledger.OpenEmbedded(ctx, dir, opts)
	if err != nil {
		tb.Fatal(err)
	}
	e := &embedded{dir: dir, l: l, srv: httptest.NewServer(l.Handler())}
	e.c = newClient(tb, e.srv.URL)
	tb.Cleanup(func() { e.close() })
	waitCheckpoint(tb, e.c, 0)
	return e
}

func (e *embedded) close() error {
	e.srv.Close()
	return e.l.Close()
}

// waitCheckpoint waits until the latest cosigned checkpoint covers at
// least size entries.
func waitCheckpoint(tb testing.TB, c *client.Client, size uint64) *client.Status {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := c.Status(context.Background())
		if err == nil && st.Checkpointed && st.CheckpointSize >= size {
			return st
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no checkpoint of size %d at %s within 2 minutes (status %+v, err %v)", size, c.URL(), st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// result is what submitting a set of entries gave.
type result struct {
	elapsed  time.Duration
	receipts []verify.Receipt // by entry position
	lat      []time.Duration  // per entry: submit to receipt
}

func (r *result) rate() float64 { return float64(len(r.receipts)) / r.elapsed.Seconds() }

// submitter sends entries to a ledger and waits for their commit.
type submitter interface {
	// submit commits entries[lo:hi] and fills res for them.
	submit(ctx context.Context, entries []*verify.SignedEntry, lo, hi int, res *result) error
	// batch is how many entries one call takes.
	batch() int
}

// appendOne calls an Appender (in process, or the HTTP client's single
// entry POST /v1/entries) for one entry at a time.
type appendOne struct{ a []ledger.Appender }

func (s appendOne) batch() int { return 1 }

func (s appendOne) submit(ctx context.Context, entries []*verify.SignedEntry, lo, hi int, res *result) error {
	for i := lo; i < hi; i++ {
		t0 := time.Now()
		rc, err := s.a[i%len(s.a)].Append(ctx, entries[i])
		if err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		res.receipts[i], res.lat[i] = rc, time.Since(t0)
	}
	return nil
}

// appendBatch posts batches to POST /v1/entries/batch (wait=true), spread
// over the given clients.
type appendBatch struct {
	c    []*client.Client
	size int
}

func (s appendBatch) batch() int { return s.size }

func (s appendBatch) submit(ctx context.Context, entries []*verify.SignedEntry, lo, hi int, res *result) error {
	t0 := time.Now()
	rs, err := s.c[(lo/s.size)%len(s.c)].AppendBatch(ctx, entries[lo:hi], true)
	if err != nil {
		return fmt.Errorf("batch at %d: %w", lo, err)
	}
	el := time.Since(t0)
	for j, r := range rs {
		if r.Err != nil {
			return fmt.Errorf("entry %d: %w", lo+j, r.Err)
		}
		res.receipts[lo+j], res.lat[lo+j] = r.Receipt, el
	}
	return nil
}

// commitAll submits entries from workers concurrent submitters and
// checks every receipt: a distinct index and the entry's own leaf hash.
func commitAll(tb testing.TB, s submitter, entries []*verify.SignedEntry, workers int) *result {
	res := &result{receipts: make([]verify.Receipt, len(entries)), lat: make([]time.Duration, len(entries))}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	step := s.batch()
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				lo := int(next.Add(int64(step))) - step
				if lo >= len(entries) || failed.Load() != nil {
					return
				}
				if err := s.submit(ctx, entries, lo, min(lo+step, len(entries)), res); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	if err, _ := failed.Load().(error); err != nil {
		tb.Fatal(err)
	}
	seen := make(map[uint64]bool, len(entries))
	for i, rc := range res.receipts {
		if rc.LeafHash != verify.LeafHash(entries[i].Encode()) {
			tb.Fatalf("entry %d: receipt leaf hash %x is not the entry's", i, rc.LeafHash)
		}
		if seen[rc.Index] {
			tb.Fatalf("entry %d: index %d given twice", i, rc.Index)
		}
		seen[rc.Index] = true
	}
	return res
}

// percentile of sorted durations, in milliseconds.
func percentileMS(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(int(float64(len(sorted))*p), len(sorted)-1)
	return float64(sorted[i].Microseconds()) / 1000
}

func reportLatency(b *testing.B, lat []time.Duration) {
	s := slices.Clone(lat)
	slices.Sort(s)
	b.ReportMetric(percentileMS(s, 0.50), "p50-ms")
	b.ReportMetric(percentileMS(s, 0.99), "p99-ms")
}

// memTree is an independent in-memory copy of the log's Merkle tree, built
// from the receipts: the roots it gives must be the ledger's.
type memTree struct {
	leaves [][]byte // tx by index
	stored []tlog.Hash
}

func (t *memTree) reader() tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			if x >= int64(len(t.stored)) {
				return nil, errors.New("memTree: hash not stored yet")
			}
			out[i] = t.stored[x]
		}
		return out, nil
	})
}

// add records committed entries; the indices they got must continue the
// log without gaps once sorted.
func (t *memTree) add(entries []*verify.SignedEntry, rcs []verify.Receipt) error {
	base := uint64(len(t.leaves))
	txs := make([][]byte, len(entries))
	for i, rc := range rcs {
		if rc.Index < base || rc.Index >= base+uint64(len(entries)) || txs[rc.Index-base] != nil {
			return fmt.Errorf("receipt index %d outside %d..%d or repeated", rc.Index, base, base+uint64(len(entries)))
		}
		txs[rc.Index-base] = entries[i].Encode()
	}
	for _, tx := range txs {
		hs, err := tlog.StoredHashes(int64(len(t.leaves)), tx, t.reader())
		if err != nil {
			return err
		}
		t.stored = append(t.stored, hs...)
		t.leaves = append(t.leaves, tx)
	}
	return nil
}

func (t *memTree) root(size uint64) tlog.Hash {
	if size == 0 {
		return emptyRoot
	}
	h, err := tlog.TreeHash(int64(size), t.reader())
	if err != nil {
		panic(err)
	}
	return h
}

// emptyRoot is the RFC 6962 root of the empty tree: SHA-256 of nothing.
var emptyRoot = tlog.Hash(sha256.Sum256(nil))

// shared fixtures live for the whole process (across -count runs) because
// building them is slow; TestMain closes them.
var (
	sharedMu      sync.Mutex
	sharedClosers []func() error
)

func onExit(fn func() error) {
	sharedMu.Lock()
	sharedClosers = append(sharedClosers, fn)
	sharedMu.Unlock()
}

func closeShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	for i := len(sharedClosers) - 1; i >= 0; i-- {
		if err := sharedClosers[i](); err != nil {
			fmt.Fprintln(os.Stderr, "closing a fixture:", err)
		}
	}
	sharedClosers = nil
}
