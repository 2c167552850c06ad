package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// TestStoredEntryForms: every entry is stored packed, shorter, and comes
// back byte for byte with its height; what does not rebuild exactly is
// stored plain; plain values (every store before decision 0173) read as
// before.
func TestStoredEntryForms(t *testing.T) {
	key := newTestKey(t)
	times := []time.Time{
		time.Date(2026, 12, 6, 19, 30, 0, 123e6, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 999e6, time.UTC),
		time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	bodies := []any{
		map[string]any{},
		map[string]any{"text": strings.Repeat("é\u2028\"\\", 40), "n": -1.5e300},
		map[string]any{"nested": []any{map[string]any{"a": nil}, true, "x"}},
	}
	kinds := []verify.Kind{KindNote, KindNodeRegistered, verify.Kind(strings.Repeat("k", 200))}
	nonces := []uint64{0, 1, 1 << 40, verify.MaxNonce}
	n := 0
	for _, at := range times {
		for _, body := range bodies {
			for _, kind := range kinds {
				for _, nonce := range nonces {
					se, err := verify.NewEntryWithNonce(key, kind, body, nonce, at)
					if err != nil {
						t.Fatal(err)
					}
					tx := se.Encode()
					height := int64(n*977 + 1)
					n++
					for _, v := range [][]byte{storeValue(height, tx, se), storeValue(height, tx, nil)} {
						if v[0] != packedEntry || len(v) >= len(tx) {
							t.Fatalf("%s: stored in %d bytes, form %#x, for a %d-byte entry", tx, len(v), v[0], len(tx))
						}
						h, got, ok := readValue(v)
						if !ok || h != height || !bytes.Equal(got, tx) {
							t.Fatalf("stored %s at %d, read back %q at %d (%v)", tx, height, got, h, ok)
						}
					}
				}
			}
		}
	}
	// Not an entry, or not exactly what its fields rebuild: stored plain.
	se := signEntry(t, key, KindNote, map[string]any{"a": 1})
	odd := *se
	odd.Entry.Submitter = "ed25519:" + strings.Repeat("A", 42) + "B=" // base64 that re-encodes otherwise
	for _, tx := range [][]byte{[]byte("not an entry"), {}, odd.Encode()} {
		v := storeValue(7, tx, nil)
		if h, got, ok := readValue(v); v[0] != 0 || !ok || h != 7 || !bytes.Equal(got, tx) {
			t.Fatalf("%q stored as %x, read back %q at %d", tx, v, got, h)
		}
	}
	// Corrupt packed values are unreadable, never another entry.
	v := storeValue(3, se.Encode(), se)
	for _, cut := range []int{1, 2, 10, 40, len(v) - len(se.Entry.Body) - 1} {
		if _, got, ok := readValue(v[:cut]); ok {
			t.Fatalf("a packed value cut to %d bytes read as %q", cut, got)
		}
	}
	// Batch-signed entries (decision 0175): packed with their place and
	// path, back byte for byte; cut, unreadable.
	for _, n := range []int{2, 3, 17, verify.MaxBatch} {
		items := make([]verify.BatchItem, n)
		for i := range items {
			items[i] = verify.BatchItem{Kind: KindNote, Body: map[string]any{"i": i}, Nonce: uint64(i), Time: times[0]}
		}
		ses, err := verify.SignBatch(key, items)
		if err != nil {
			t.Fatal(err)
		}
		for i, se := range ses {
			tx := se.Encode()
			for _, v := range [][]byte{storeValue(int64(i+1), tx, se), storeValue(int64(i+1), tx, nil)} {
				if v[0] != packedBatchEntry || len(v) >= len(tx) {
					t.Fatalf("%s: stored in %d bytes, form %#x", tx, len(v), v[0])
				}
				if h, got, ok := readValue(v); !ok || h != int64(i+1) || !bytes.Equal(got, tx) {
					t.Fatalf("stored %s, read back %q at %d (%v)", tx, got, h, ok)
				}
				for _, cut := range []int{1, 3, 5, 20, len(v) - len(se.Entry.Body) - 1} {
					if _, got, ok := readValue(v[:cut]); ok {
						t.Fatalf("a packed batch value cut to %d bytes read as %q", cut, got)
					}
				}
			}
		}
	}
}

// unhashNonces turns a stopped store's replay index into the form of
// stores from before decision 0173: keyed by (submitter, nonce), no
// submitters bucket.
func unhashNonces(t *testing.T, path string) {
	t.Helper()
	updateStopped(t, path, func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketNonces); err != nil {
			return err
		}
		if err := tx.DeleteBucket(bucketSubmitters); err != nil {
			return err
		}
		nb, err := tx.CreateBucket(bucketNonces)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketEntries).ForEach(func(k, v []byte) error {
			_, etx, _ := readValue(v)
			se, err := verify.DecodeEntry(etx)
			if err != nil {
				return err
			}
			pub, _ := protocol.ParseEd25519Key(se.Entry.Submitter)
			return nb.Put(nonceIndexKey(false, pub, se.Entry.Nonce), bytes.Clone(k))
		})
	})
}

// TestStoreFormsAcrossRestart: a store written before decision 0173 (every
// entry plain, every leaf hash stored, nonces by pair) is opened by this version, which
// appends packed entries without stored leaf hashes after them; across a crash-like stop (the process's last block is only
// what bbolt committed) and a restart every entry is served byte for byte,
// each leaf hash is the stored one, the root is the one the chain agreed
// on, and a snapshot of the mixed store is the same stream as of the
// store with every entry in either form.
func TestStoreFormsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	key := newTestKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var txs [][]byte
	appendSome := func(e *Embedded, n int) {
		for i := range n {
			se := signEntry(t, key, KindNote, map[string]any{"i": len(txs), "pad": strings.Repeat("x", i)})
			rc, err := e.Append(ctx, se)
			if err != nil {
				t.Fatal(err)
			}
			if rc.Index != uint64(len(txs)) {
				t.Fatalf("index %d, want %d", rc.Index, len(txs))
			}
			txs = append(txs, se.Encode())
		}
	}
	path := filepath.Join(dir, "data", storeFile)
	rewrite := func(form func(i uint64, h int64, tx []byte) []byte) {
		t.Helper()
		updateStopped(t, path, func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketEntries)
			type kv struct{ k, v []byte }
			var all []kv
			b.ForEach(func(k, v []byte) error {
				h, etx, ok := readValue(v)
				if !ok {
					return fmt.Errorf("entry %x unreadable", k)
				}
				i, _ := getU64(k)
				all = append(all, kv{bytes.Clone(k), form(i, h, etx)})
				return nil
			})
			hs := tx.Bucket(bucketHashes)
			for _, x := range all {
				if err := b.Put(x.k, x.v); err != nil {
					return err
				}
				// A store before decision 0173 holds each leaf hash too.
				i, _ := getU64(x.k)
				leafKey := be64(uint64(tlog.StoredHashIndex(0, int64(i))))
				_, etx, _ := readValue(x.v)
				leaf := verify.LeafHash(etx)
				var err error
				if x.v[0] == packedEntry {
					err = hs.Delete(leafKey)
				} else {
					err = hs.Put(leafKey, leaf[:])
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
	}

	e := openTestEmbedded(t, dir)
	appendSome(e, 12)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	plain := func(_ uint64, h int64, tx []byte) []byte { return plainEntry(h, tx) }
	rewrite(plain) // as a store before decision 0173 holds them
	unhashNonces(t, path)

	e = openTestEmbedded(t, dir)
	appendSome(e, 12)
	check := func(when string) {
		t.Helper()
		err := e.ln.store.view(func(r reader) error {
			st, err := r.state()
			if err != nil {
				return err
			}
			if st.Size < uint64(len(txs)) {
				return fmt.Errorf("log of %d entries, %d appended", st.Size, len(txs))
			}
			plain, packed := 0, 0
			for i, want := range txs {
				v := r.get(bucketEntries, be64(uint64(i)))
				leafStored := r.get(bucketHashes, be64(uint64(tlog.StoredHashIndex(0, int64(i))))) != nil
				if v[0] == packedEntry {
					packed++
				} else {
					plain++
				}
				if leafStored != (v[0] != packedEntry) {
					return fmt.Errorf("entry %d stored in form %#x with its leaf hash stored: %v", i, v[0], leafStored)
				}
				_, got, ok := r.entry(uint64(i))
				if !ok || !bytes.Equal(got, want) {
					return fmt.Errorf("entry %d: %q, want %q", i, got, want)
				}
			}
			if plain < 12 || packed < 12 {
				return fmt.Errorf("%d plain and %d packed entries, want 12 of each at least", plain, packed)
			}
			return checkRestored(r, st.Height, st.Root[:])
		})
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
	}
	check("mixed store, running")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	snapshotStream := func() []byte {
		t.Helper()
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var b bytes.Buffer
		if err := db.View(func(tx *bolt.Tx) error { return writeSnapshotStream(tx, &b) }); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	mixed := snapshotStream()
	if !bytes.Contains(mixed, txs[len(txs)-1]) {
		t.Fatal("the snapshot stream does not carry the last entry's transaction as it is")
	}
	rewrite(func(_ uint64, h int64, tx []byte) []byte { return storeValue(h, tx, nil) })
	if !bytes.Equal(snapshotStream(), mixed) {
		t.Fatal("the same state, stored in another form, gave another snapshot stream")
	}
	rewrite(plain)
	if !bytes.Equal(snapshotStream(), mixed) {
		t.Fatal("the same state, stored plain, gave another snapshot stream")
	}
	rewrite(func(i uint64, h int64, tx []byte) []byte { // back to mixed: the first 12 plain
		if i < 12 {
			return plainEntry(h, tx)
		}
		return storeValue(h, tx, nil)
	})

	e = openTestEmbedded(t, dir)
	check("mixed store, restarted")
	appendSome(e, 3)
	check("mixed store, appended after the restart")
	// The replay index keeps its form (by pair, from before) and refuses
	// replays of entries from before and after the restart.
	err := e.ln.store.view(func(r reader) error {
		if r.hashedNonces() {
			return fmt.Errorf("a store from before decision 0173 now hashes its nonces")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 13, len(txs) - 1} {
		se, err := verify.DecodeEntry(txs[i])
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.Append(ctx, se)
		var rej *verify.RejectedError
		if !errors.As(err, &rej) || rej.Code != verify.CodeReplay || rej.HeldBy == nil || *rej.HeldBy != uint64(i) {
			t.Fatalf("entry %d appended again: %v", i, err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// Its snapshot is format 1; a node of this version restores it in
	// the same form, entries packed and leaf hashes left out.
	st, err := openStore(path)
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := openSnapshots(t.TempDir(), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	var snap *abci.Snapshot
	var want committedState
	err = st.view(func(r reader) error {
		if want, err = r.state(); err != nil {
			return err
		}
		snap, err = snaps.write(r, want.Height)
		return err
	})
	st.close()
	if err != nil {
		t.Fatal(err)
	}
	if snap.Format != snapshotFormatOld {
		t.Fatalf("a store keyed by pair wrote snapshot format %d", snap.Format)
	}
	stream, err := os.ReadFile(snaps.path(snap.Height, ".snap"))
	if err != nil {
		t.Fatal(err)
	}
	restored := t.TempDir()
	st2, err := openStore(filepath.Join(restored, storeFile))
	if err != nil {
		t.Fatal(err)
	}
	defer st2.close()
	a, err := newApp(st2, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if a.snaps, err = openSnapshots(restored, 0, 1); err != nil {
		t.Fatal(err)
	}
	bg := context.Background()
	if res, err := a.OfferSnapshot(bg, &abci.OfferSnapshotRequest{Snapshot: snap, AppHash: want.Root[:]}); err != nil || res.Result != abci.OFFER_SNAPSHOT_RESULT_ACCEPT {
		t.Fatalf("offer of a format 1 snapshot: %v %v", res, err)
	}
	var res *abci.ApplySnapshotChunkResponse
	for i := range snap.Chunks {
		chunk := stream[int(i)*snapshotChunkSize : min(len(stream), int(i+1)*snapshotChunkSize)]
		if res, err = a.ApplySnapshotChunk(bg, &abci.ApplySnapshotChunkRequest{Index: i, Chunk: chunk, Sender: "peer"}); err != nil {
			t.Fatal(err)
		}
	}
	if res.Result != abci.APPLY_SNAPSHOT_CHUNK_RESULT_ACCEPT {
		t.Fatalf("restore of a format 1 snapshot: %v", res.Result)
	}
	err = st2.view(func(r reader) error {
		if r.hashedNonces() {
			return errors.New("restored from format 1 with hashed nonces")
		}
		for i, want := range txs {
			if v := r.get(bucketEntries, be64(uint64(i))); v[0] != packedEntry {
				return fmt.Errorf("restored entry %d stored plain", i)
			}
			if r.get(bucketHashes, be64(uint64(tlog.StoredHashIndex(0, int64(i))))) != nil {
				return fmt.Errorf("restored entry %d with its leaf hash stored", i)
			}
			if _, got, ok := r.entry(uint64(i)); !ok || !bytes.Equal(got, want) {
				return fmt.Errorf("restored entry %d: %q", i, got)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// storeValue is storedEntryValue for an entry stored with no
// predecessor given.
func storeValue(height int64, tx []byte, se *verify.SignedEntry) []byte {
	v, _ := storedEntryValue(height, tx, se, nil)
	return v
}

// readValue reads a value that needs no predecessor.
func readValue(v []byte) (int64, []byte, bool) {
	e, ok := decodeStoredEntry(v, nil)
	return e.height, e.tx, ok
}

// TestStoredBatchMembers: members of a batch stored one after another take
// their count, signature, submitter and most of their path from the one
// before ("next" values), at most maxNextChain in a row; read back through
// their predecessors they are their transactions byte for byte, in any
// order of the members, interleaved with another batch or not; cut, or
// read without their predecessor, they are unreadable.
func TestStoredBatchMembers(t *testing.T) {
	key := newTestKey(t)
	at := time.Date(2026, 12, 6, 19, 30, 0, 123e6, time.UTC)
	sign := func(n, from int) [][]byte {
		items := make([]verify.BatchItem, n)
		for i := range items {
			items[i] = verify.BatchItem{Kind: KindNote, Body: map[string]any{"text": strings.Repeat("x", 300), "i": from + i}, Nonce: uint64(from + i), Time: at}
		}
		ses, err := verify.SignBatch(key, items)
		if err != nil {
			t.Fatal(err)
		}
		out := make([][]byte, n)
		for i, se := range ses {
			out[i] = se.Encode()
		}
		return out
	}
	// store puts txs in a log in order, as FinalizeBlock does, and reads
	// every one back.
	store := func(name string, txs [][]byte) (map[byte]int, int) {
		t.Helper()
		log := map[uint64][]byte{}
		get := func(i uint64) []byte { return log[i] }
		var prev *storedEntry
		forms, size := map[byte]int{}, 0
		for i, tx := range txs {
			v, cur := storedEntryValue(int64(i+1), tx, nil, prev)
			log[uint64(i)] = v
			prev = &cur
			forms[v[0]]++
			size += len(v)
		}
		for i, tx := range txs {
			e, ok := loadStoredEntry(get, uint64(i))
			if !ok || e.height != int64(i+1) || !bytes.Equal(e.tx, tx) {
				t.Fatalf("%s: entry %d read back as %q (%v)", name, i, e.tx, ok)
			}
			if e.chain >= maxNextChain {
				t.Fatalf("%s: entry %d followed %d predecessors", name, i, e.chain)
			}
		}
		return forms, size
	}
	for _, n := range []int{2, 3, 16, 17, 100, verify.MaxBatch} {
		txs := sign(n, 0)
		forms, size := store(fmt.Sprintf("batch of %d", n), txs)
		full := (n + maxNextChain - 1) / maxNextChain
		if forms[packedBatchEntry] != full || forms[packedNextEntry] != n-full {
			t.Errorf("batch of %d: forms %v, want %d full and the rest next", n, forms, full)
		}
		// Against the same entries signed alone, stored packed.
		alone := 0
		for i := range n {
			se, err := verify.NewEntryWithNonce(key, KindNote, map[string]any{"text": strings.Repeat("x", 300), "i": i}, uint64(i), at)
			if err != nil {
				t.Fatal(err)
			}
			alone += len(storeValue(int64(i+1), se.Encode(), se))
		}
		if n >= 16 && size >= alone {
			t.Errorf("batch of %d stored in %d bytes, the same entries signed alone in %d", n, size, alone)
		}
		t.Logf("batch of %d: %.1f bytes a member stored, %.1f signed alone (forms %v)", n, float64(size)/float64(n), float64(alone)/float64(n), forms)
	}
	a, b := sign(8, 0), sign(8, 100)
	var mixed, shuffled [][]byte
	for i := range a {
		mixed = append(mixed, a[i], b[i])
	}
	for _, i := range []int{3, 1, 0, 2, 7, 5, 6, 4} {
		shuffled = append(shuffled, a[i])
	}
	if forms, _ := store("two batches interleaved", mixed); forms[packedNextEntry] != 0 {
		t.Errorf("interleaved batches: forms %v, want none next", forms)
	}
	if forms, _ := store("members out of order", shuffled); forms[packedNextEntry] != 7 {
		t.Errorf("members out of order: forms %v, want 7 next", forms)
	}
	// Cut, or without their predecessor: unreadable.
	txs := sign(4, 0)
	first, fe := storedEntryValue(1, txs[0], nil, nil)
	second, _ := storedEntryValue(2, txs[1], nil, &fe)
	if second[0] != packedNextEntry {
		t.Fatalf("second member stored in form %#x", second[0])
	}
	prev := func() (*storedEntry, bool) { return &fe, true }
	for cut := 1; cut < len(second)-300; cut++ {
		if e, ok := decodeStoredEntry(second[:cut], prev); ok {
			t.Fatalf("a next value cut to %d bytes read as %q", cut, e.tx)
		}
	}
	if _, ok := decodeStoredEntry(second, nil); ok {
		t.Error("a next value read without its predecessor")
	}
	if e, ok := decodeStoredEntry(first, nil); !ok || !bytes.Equal(e.tx, txs[0]) {
		t.Error("a full batch value needs no predecessor")
	}
}
