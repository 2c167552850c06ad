package ledger

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// TestEmbeddedCrash kills a process appending to an embedded ledger at a
// random point (SIGKILL, no chance to flush anything) and reopens the
// directory: every entry the dead process had a receipt for is there with
// the same leaf hash and provable, and appending continues.
func TestEmbeddedCrash(t *testing.T) {
	dir := t.TempDir()
	w := startChild(t, envChildWriter, dir, "writer")
	receipts := map[uint64]string{}
	parse := func(l string) { parseReceiptLine(t, receipts, l) }
	deadline := time.After(90 * time.Second)
	for len(receipts) < 300 {
		select {
		case l, ok := <-w.lines:
			if !ok {
				t.Fatal("writer exited")
			}
			parse(l)
		case <-deadline:
			t.Fatalf("only %d receipts in 90s", len(receipts))
		}
	}
	killAndCheck(t, w, dir, receipts)
}

// TestEmbeddedCrashWALPruned is TestEmbeddedCrash once CometBFT's
// consensus WAL has rotated several chunks and the validator has removed
// all but the newest (walprune.go): the writer's notes are padded to 48
// KiB so that chunks of 10 MB fill in seconds; it is killed after a
// removal, and the replay on reopening reads only what was kept.
func TestEmbeddedCrashWALPruned(t *testing.T) {
	dir := t.TempDir()
	w := startChild(t, envChildWriter, dir, "writer", envChildWriterPad+"=49152")
	receipts := map[uint64]string{}
	parse := func(l string) { parseReceiptLine(t, receipts, l) }
	deadline := time.After(150 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var afterPrune int
	for afterPrune < 20 {
		select {
		case l, ok := <-w.lines:
			if !ok {
				t.Fatal("writer exited")
			}
			parse(l)
			if afterPrune > 0 {
				afterPrune++
			}
		case <-tick.C:
			if afterPrune == 0 && walPruned(t, dir) {
				afterPrune = 1
			}
		case <-deadline:
			t.Fatalf("no WAL chunk removed in 150 s (%d receipts)", len(receipts))
		}
	}
	killAndCheck(t, w, dir, receipts)
}

// parseReceiptLine records a writer's "<index> <leaf hash hex>" line.
func parseReceiptLine(t *testing.T, receipts map[uint64]string, l string) {
	t.Helper()
	idx, h, ok := strings.Cut(l, " ")
	i, err := strconv.ParseUint(idx, 10, 64)
	if !ok || err != nil {
		t.Fatalf("writer printed %q", l)
	}
	receipts[i] = h
}

// walPruned says whether the consensus WAL under dir has numbered chunks
// and its first, wal.000, is gone: the validator removed it.
func walPruned(t *testing.T, dir string) bool {
	t.Helper()
	heads, err := filepath.Glob(filepath.Join(dir, "*", "cs.wal", "wal.*"))
	if err != nil {
		t.Fatal(err)
	}
	if more, _ := filepath.Glob(filepath.Join(dir, "*", "*", "cs.wal", "wal.*")); len(more) > 0 {
		heads = append(heads, more...)
	}
	first := false
	for _, h := range heads {
		first = first || strings.HasSuffix(h, "wal.000")
	}
	if len(heads) > 0 && !first {
		t.Logf("WAL chunks left: %v", heads)
		return true
	}
	return false
}

// killAndCheck kills the writer w (SIGKILL, no chance to flush anything),
// takes the receipts it printed before dying, and reopens the embedded
// ledger in dir: every entry the writer had a receipt for is there with
// the same leaf hash and provable, and appending continues.
func killAndCheck(t *testing.T, w *child, dir string, receipts map[uint64]string) {
	t.Helper()
	w.kill()
	for l := range w.lines {
		parseReceiptLine(t, receipts, l)
	}
	e := openTestEmbedded(t, dir)
	defer e.Close()
	c := serveAPI(t, e.Handler())
	var maxIdx uint64
	for i := range receipts {
		maxIdx = max(maxIdx, i)
	}
	cp := c.verifiedCheckpoint(maxIdx + 1)
	for i, h := range receipts {
		var en entryJSON
		c.getJSON(fmt.Sprintf("/v1/entries/%d", i), &en)
		if got := hex.EncodeToString(en.LeafHash); got != h {
			t.Fatalf("entry %d: leaf %s after the crash, receipt said %s", i, got, h)
		}
		if i%7 == 0 {
			if err := c.checkInclusion(i, cp); err != nil {
				t.Fatalf("entry %d: %v", i, err)
			}
		}
	}
	rc, err := e.Append(context.Background(), signEntry(t, newTestKey(t), KindNote, map[string]any{"after": "crash"}))
	if err != nil {
		t.Fatal(err)
	}
	if rc.Index < cp.Size {
		t.Fatalf("appended at %d, inside the checkpointed log of %d", rc.Index, cp.Size)
	}
}

// procNet is a testnet of validator processes.
type procNet struct {
	t     testing.TB
	homes []TestnetValidator
	procs []*child
	vals  validatorsJSON
}

func startProcNet(t testing.TB, n int) *procNet {
	homes, err := GenerateTestnet(t.TempDir(), n, TestnetOptions{ChainID: "fault-test"})
	if err != nil {
		t.Fatal(err)
	}
	pn := &procNet{t: t, homes: homes, procs: make([]*child, n)}
	for i := range homes {
		pn.start(i)
	}
	for i := range homes {
		pn.procs[i].waitLine("ready", 60*time.Second)
	}
	pn.client(0).getJSON("/v1/validators", &pn.vals)
	return pn
}

func (pn *procNet) start(i int) {
	pn.procs[i] = startChild(pn.t, envChildValidator, pn.homes[i].Home, fmt.Sprintf("v%d", i))
}

func (pn *procNet) client(i int) *apiClient { return &apiClient{t: pn.t, base: pn.homes[i].APIURL} }

func (pn *procNet) status(i int) (statusJSON, error) {
	res, err := http.Get(pn.homes[i].APIURL + "/v1/status")
	if err != nil {
		return statusJSON{}, err
	}
	defer res.Body.Close()
	var st statusJSON
	return st, json.NewDecoder(res.Body).Decode(&st)
}

// appendVia posts an entry to validator i and waits for its receipt.
func (pn *procNet) appendVia(i int, se *verify.SignedEntry) receiptJSON {
	pn.t.Helper()
	status, b := pn.client(i).do("POST", "/v1/entries", se.Encode())
	if status != 200 {
		pn.t.Fatalf("append via v%d: %d %s", i, status, b)
	}
	var rc receiptJSON
	if err := json.Unmarshal(b, &rc); err != nil {
		pn.t.Fatal(err)
	}
	return rc
}

// waitAgree waits until the given validators report the same size >= min
// and the same root, and returns it.
func (pn *procNet) waitAgree(idx []int, min uint64, timeout time.Duration) statusJSON {
	pn.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var sts []statusJSON
		for _, i := range idx {
			st, err := pn.status(i)
			if err == nil {
				sts = append(sts, st)
			}
		}
		if len(sts) == len(idx) && sts[0].Size >= min {
			same := true
			for _, st := range sts[1:] {
				same = same && st.Size == sts[0].Size
			}
			if same {
				for _, st := range sts[1:] {
					if !bytes.Equal(st.Root, sts[0].Root) {
						pn.t.Fatalf("validators disagree: same size %d, roots %x and %x", st.Size, sts[0].Root, st.Root)
					}
				}
				return sts[0]
			}
		}
		if time.Now().After(deadline) {
			pn.t.Fatalf("validators %v did not agree on a log of at least %d entries within %s: %+v", idx, min, timeout, sts)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFaults runs four validators as separate processes: with one killed
// the others commit; with two killed nothing commits and the survivors
// agree; restarted, the killed ones catch up and all agree; and a
// validator whose store was tampered with serves a proof that fails
// against the cosigned checkpoint.
func TestFaults(t *testing.T) {
	pn := startProcNet(t, 4)
	key := newTestKey(t)
	note := func(i int) *verify.SignedEntry {
		return signEntry(t, key, KindNote, map[string]any{"text": fmt.Sprintf("entry-%03d", i)})
	}
	for i := range 10 {
		pn.appendVia(i%4, note(i))
	}

	// One of four down: commits continue, checkpoints still get > 2/3.
	pn.procs[3].kill()
	for i := 10; i < 20; i++ {
		pn.appendVia(i%3, note(i))
	}
	cp := pn.client(0).verifiedCheckpoint(20)
	if cp.Size < 20 {
		t.Fatalf("checkpoint of %d entries with one validator down", cp.Size)
	}

	// Two of four down: no commits, no fork.
	pn.procs[2].kill()
	before := pn.waitAgree([]int{0, 1}, 20, 10*time.Second)
	var pending []string
	for i := 20; i < 25; i++ {
		pending = append(pending, string(note(i).Encode()))
	}
	status, b := pn.client(0).do("POST", "/v1/entries/batch?wait=false", []byte(`{"entries":[`+strings.Join(pending, ",")+`]}`))
	if status != 200 || strings.Count(string(b), `"pending":true`) != 5 {
		t.Fatalf("submitting with two validators down: %d %s", status, b)
	}
	time.Sleep(3 * time.Second)
	for _, i := range []int{0, 1} {
		st, err := pn.status(i)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size != before.Size || st.Height > before.Height+1 || !bytes.Equal(st.Root, before.Root) {
			t.Fatalf("v%d moved with only 2 of 4 validators: %+v -> %+v", i, before, st)
		}
	}

	// Both back: the pending entries commit and all four agree.
	pn.start(2)
	pn.start(3)
	pn.procs[2].waitLine("ready", 60*time.Second)
	pn.procs[3].waitLine("ready", 60*time.Second)
	agreed := pn.waitAgree([]int{0, 1, 2, 3}, 25, 90*time.Second)
	cp = pn.client(3).verifiedCheckpoint(agreed.Size)
	for vi := range 4 {
		for _, i := range []uint64{0, 12, 24} {
			if err := pn.client(vi).checkInclusion(i, cp); err != nil {
				t.Fatalf("v%d entry %d after recovery: %v", vi, i, err)
			}
		}
	}

	// Tamper with v3's copy of entry 5, offline, and restart it.
	pn.procs[3].stop()
	tamperEntry(t, filepath.Join(pn.homes[3].Home, "data", storeFile), 5, "entry-005", "entrx-005")
	pn.start(3)
	pn.procs[3].waitLine("ready", 60*time.Second)
	pn.appendVia(0, note(99))
	agreed = pn.waitAgree([]int{0, 1, 2, 3}, 26, 60*time.Second)
	cp = pn.client(0).verifiedCheckpoint(agreed.Size)
	if err := pn.client(0).checkInclusion(5, cp); err != nil {
		t.Fatalf("honest validator's proof of entry 5: %v", err)
	}
	err := pn.client(3).checkInclusion(5, cp)
	if err == nil {
		t.Fatal("tampered validator's entry 5 verified against the cosigned checkpoint")
	}
	t.Logf("tampered entry refused as expected: %v", err)

	for _, p := range pn.procs {
		p.stop()
	}
}

// tamperEntry rewrites an entry's bytes in a stopped validator's store.
func tamperEntry(t *testing.T, path string, index uint64, old, new string) {
	t.Helper()
	updateStopped(t, path, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEntries)
		v := b.Get(be64(index))
		if !bytes.Contains(v, []byte(old)) {
			return fmt.Errorf("entry %d does not contain %q", index, old)
		}
		return b.Put(be64(index), bytes.Replace(bytes.Clone(v), []byte(old), []byte(new), 1))
	})
}

// updateStopped runs fn in one write transaction of the store at path,
// whose ledger is stopped.
func updateStopped(t *testing.T, path string, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}
