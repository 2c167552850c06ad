package ledgerbench

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/cloisterhq/cloister/ledger"
)

// diskUsage is what a directory tree takes: allocated blocks (what df
// sees; sparse and preallocated-but-unwritten regions excluded) and
// apparent file sizes, in total and per component.
type diskUsage struct {
	alloc, apparent int64
	parts           map[string]int64 // allocated bytes by component
}

// component names the part of a ledger home a file belongs to.
func component(rel string) string {
	switch {
	case strings.HasPrefix(rel, "data/ledger.db"):
		return "app-bbolt"
	case strings.HasPrefix(rel, "data/blockstore.db"):
		return "comet-blockstore"
	case strings.HasPrefix(rel, "data/state.db"):
		return "comet-state"
	case strings.HasPrefix(rel, "data/cs.wal"):
		return "comet-wal"
	case strings.HasPrefix(rel, "data/evidence.db"):
		return "comet-evidence"
	default:
		return "other"
	}
}

func measureDisk(tb testing.TB, dir string) diskUsage {
	u := diskUsage{parts: map[string]int64{}}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // a temporary file renamed away meanwhile (the ledger runs)
		}
		if err != nil {
			return err
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		alloc := st.Blocks * 512
		u.alloc += alloc
		if info.Mode().IsRegular() {
			u.apparent += info.Size()
		}
		u.parts[component(filepath.ToSlash(rel))] += alloc
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

func (u diskUsage) String() string {
	keys := make([]string, 0, len(u.parts))
	for k := range u.parts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + humanBytes(u.parts[k]) + " ")
	}
	return "allocated " + humanBytes(u.alloc) + ", apparent " + humanBytes(u.apparent) + " (" + strings.TrimSpace(b.String()) + ")"
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// BenchmarkStorage commits b.N entries into a fresh embedded ledger (256
// in-process submitters, 10,000 at a time), waits for their checkpoint,
// closes the ledger and measures its whole directory: CometBFT's block
// store, state, evidence and consensus WAL, and the application's bbolt
// file. Run with -benchtime=100000x.
//
// Metrics (allocated bytes, what df sees): disk-B/entry is the final total
// over b.N; marginal-B/entry is the growth per entry between the first and
// the last 10,000-entry step (the fixed part, such as preallocated pebble
// WAL files, left out); MB/1e6-entries extrapolates the final size to a
// million entries at the marginal rate. app-B/entry and comet-B/entry split
// the final size; tx-bytes is the entry size; blocks is how many blocks
// the entries took.
func BenchmarkStorage(b *testing.B) { storage(b, 0, 1) }

// BenchmarkStoragePruned is BenchmarkStorage with the ledger retaining
// only its last 50 blocks of CometBFT's block store once a checkpoint
// covers their entries (ledger.EmbeddedOptions.RetainBlocks); before
// closing it waits 12 s, so that CometBFT's pruner (every 10 s) has run
// after the last block.
func BenchmarkStoragePruned(b *testing.B) { storage(b, 50, 1) }

// BenchmarkStoragePrunedBatch16 is BenchmarkStoragePruned with the entries
// batch-signed, 16 under one signature (decision 0175): each carries its
// audit path of 4 hashes.
func BenchmarkStoragePrunedBatch16(b *testing.B) { storage(b, 50, 16) }

func storage(b *testing.B, retain int64, batch int) {
	if testing.Short() {
		b.Skip("commits many entries; skipped under -short")
	}
	const step = 10_000
	dir := b.TempDir()
	e := openEmbeddedWith(b, dir, ledger.EmbeddedOptions{ChainID: "bench-embedded", RetainBlocks: retain})
	s := newSigners(b, 64).batched(batch)
	st0 := waitCheckpoint(b, e.c, 0)
	var tx float64
	var first, last diskUsage
	var firstN, lastN int
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(b.N-done, step)
		b.StopTimer()
		entries := s.sign(b, n)
		tx += txBytes(entries) * float64(n)
		b.StartTimer()
		commitAll(b, appendOne{[]ledger.Appender{e.l}}, entries, 256)
		done += n
		b.StopTimer()
		u := measureDisk(b, dir)
		if firstN == 0 {
			first, firstN = u, done
		}
		last, lastN = u, done
		b.StartTimer()
	}
	b.StopTimer()
	st := waitCheckpoint(b, e.c, uint64(b.N))
	if st.Size != uint64(b.N) {
		b.Fatalf("log size %d after %d entries", st.Size, b.N)
	}
	if retain > 0 {
		time.Sleep(12 * time.Second)
	}
	if err := e.close(); err != nil {
		b.Fatal(err)
	}
	end := measureDisk(b, dir)
	n := float64(b.N)
	b.ReportMetric(tx/n, "tx-bytes")
	b.ReportMetric(float64(end.alloc)/n, "disk-B/entry")
	b.ReportMetric(float64(end.parts["app-bbolt"])/n, "app-B/entry")
	b.ReportMetric(float64(end.alloc-end.parts["app-bbolt"])/n, "comet-B/entry")
	b.ReportMetric(float64(st.Height-st0.Height), "blocks")
	if lastN > firstN {
		marginal := float64(last.alloc-first.alloc) / float64(lastN-firstN)
		b.ReportMetric(marginal, "marginal-B/entry")
		b.ReportMetric((float64(end.alloc)+marginal*(1e6-n))/1e6, "MB/1e6-entries")
	}
	b.Logf("%d entries: after %d: %v; after %d: %v; closed: %v", b.N, firstN, first, lastN, last, end)
	logBuckets(b, filepath.Join(dir, "data", "ledger.db"), b.N)
}

// logBuckets logs where the application's bbolt file goes, bucket by
// bucket (bytes allocated to its leaf and branch pages, and how much of
// them is in use), per entry, and the pages no bucket holds (meta,
// freelist, free pages).
func logBuckets(tb testing.TB, path string, n int) {
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var lines []string
		var held int64
		tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
			st := bk.Stats()
			alloc := int64(st.LeafAlloc + st.BranchAlloc)
			held += alloc
			if alloc == 0 {
				return nil
			}
			lines = append(lines, fmt.Sprintf("%s: %d keys, leaf %s in use of %s, branch %s of %s: %.1f B/entry",
				name, st.KeyN, humanBytes(int64(st.LeafInuse)), humanBytes(int64(st.LeafAlloc)),
				humanBytes(int64(st.BranchInuse)), humanBytes(int64(st.BranchAlloc)), float64(alloc)/float64(n)))
			return nil
		})
		rest := tx.Size() - held
		lines = append(lines, fmt.Sprintf("file %s, in no bucket (meta, freelist, free pages) %s: %.1f B/entry",
			humanBytes(tx.Size()), humanBytes(rest), float64(rest)/float64(n)))
		tb.Logf("application store by bucket:\n\t%s", strings.Join(lines, "\n\t"))
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkStorageIdle measures what an idle ledger writes. An idle chain
// makes an empty block every empty-block interval (60 s on chains with
// proposer-based timestamps, 5 s before; checkpoints never wait for it).
// It runs an embedded ledger with no entries for a window (-ledger.idle,
// default 150 s, after 2 s of warm-up) and reports two measures: the bytes
// the process sent to storage (/proc/self/io write_bytes: every page bbolt
// rewrites, every pebble and WAL append, every signing-state save, whether
// or not files grow) and the growth of the files' apparent sizes (pebble
// preallocates its WAL files, so allocated blocks would hide what was
// written). MB/day is each per second of the window times a day. One run
// is one window, whatever b.N is: run it with -benchtime=1x.
func BenchmarkStorageIdle(b *testing.B) {
	if testing.Short() {
		b.Skip("idles for minutes; skipped under -short")
	}
	window := *idleWindow
	dir := b.TempDir()
	e := openEmbedded(b, dir)
	time.Sleep(2 * time.Second)
	st0 := waitCheckpoint(b, e.c, 0)
	u0, w0 := measureDisk(b, dir), procWriteBytes(b)
	time.Sleep(window)
	u1, w1 := measureDisk(b, dir), procWriteBytes(b)
	st1 := waitCheckpoint(b, e.c, 0)
	if err := e.close(); err != nil {
		b.Fatal(err)
	}
	blocks := float64(st1.Height - st0.Height)
	day := 86400 / window.Seconds()
	b.ReportMetric(blocks, "blocks")
	b.ReportMetric(float64(w1-w0)*day/1e6, "written-MB/day")
	b.ReportMetric(float64(u1.apparent-u0.apparent)*day/1e6, "growth-MB/day")
	if blocks > 0 {
		b.ReportMetric(float64(w1-w0)/blocks, "written-B/block")
	}
	b.Logf("%v blocks in %v; %d bytes written; before %v; after %v", blocks, window, w1-w0, u0, u1)
}

var idleWindow = flag.Duration("ledger.idle", 150*time.Second, "how long BenchmarkStorageIdle watches an idle ledger")

// procWriteBytes is this process's write_bytes from /proc/self/io.
func procWriteBytes(tb testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatal("no write_bytes in /proc/self/io")
	return 0
}
