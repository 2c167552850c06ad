package ledger

import (
	"bufio"
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	abci "github.com/cometbft/cometbft/abci/types"
	bolt "go.etcd.io/bbolt"

	"github.com/cloisterhq/cloister/ledger/verify"
)

func (c *aclChain) batch(n int) [][]byte {
	c.t.Helper()
	items := make([]verify.BatchItem, n)
	for i := range items {
		c.nonce++
		items[i] = verify.BatchItem{Kind: KindNote, Body: map[string]any{"i": i}, Nonce: c.nonce, Time: c.at(c.height + 1)}
	}
	ses, err := verify.SignBatch(seedKey(0x61), items)
	if err != nil {
		c.t.Fatal(err)
	}
	txs := make([][]byte, n)
	for i, se := range ses {
		txs[i] = se.Encode()
	}
	return txs
}

// TestBatchSignedEntries: rule version 17 refuses batch-signed entries,
// naming the version that takes them; version 18 takes each member on its
// own (members of one batch in different blocks, one refused without the
// others), refuses a forged member for its signature and a replayed one
// for its nonce, and the log serves each member's bytes back exactly.
func TestBatchSignedEntries(t *testing.T) {
	t.Parallel()
	old := newACLChain(t, RulesV17)
	txs := old.batch(2)
	r, err := old.a.CheckTx(context.Background(), &abci.CheckTxRequest{Tx: txs[0], Type: abci.CHECK_TX_TYPE_CHECK})
	if err != nil || r.Code == 0 || !strings.Contains(r.Log, "rule version 17 takes only entries signed alone (batch signatures from version 18)") {
		t.Fatalf("CheckTx of a batch-signed entry at version 17: %v %+v", err, r)
	}
	old.want(txs, "malformed: batch-signed", "malformed: batch-signed")

	c := newACLChain(t, RulesV18)
	st0, _ := c.a.state()
	txs = c.batch(5)
	forged := bytes.Replace(txs[4], []byte(`{"i":4}`), []byte(`{"i":9}`), 1)
	c.want([][]byte{txs[0], txs[1], forged}, "ok", "ok", "bad_signature: signature does not verify")
	c.want([][]byte{txs[3], txs[2], txs[0], txs[4]}, "ok", "ok", "replay", "ok")
	// Members one after another are stored as "next" values (entrystore.go).
	more := c.batch(40)
	c.want(more, slices.Repeat([]string{"ok"}, len(more))...)
	logged := append([][]byte{txs[0], txs[1], txs[3], txs[2], txs[4]}, more...)
	forms := map[byte]int{}
	var stream bytes.Buffer
	c.a.store.view(func(r reader) error {
		for i, want := range logged {
			_, got, ok := r.entry(st0.Size + uint64(i))
			if !ok || !bytes.Equal(got, want) {
				t.Errorf("entry %d: %q, want %q", st0.Size+uint64(i), got, want)
			}
			forms[r.get(bucketEntries, be64(st0.Size+uint64(i)))[0]]++
		}
		// Read in order, each with the one before (the API's listing).
		n := 0
		if bad, ok := r.entriesFrom(st0.Size+1, func(i uint64, e *storedEntry) bool {
			if want := logged[i-st0.Size]; !bytes.Equal(e.tx, want) {
				t.Errorf("entry %d read in order: %q, want %q", i, e.tx, want)
			}
			n++
			return true
		}); !ok || n != len(logged)-1 {
			t.Errorf("read %d entries in order, then entry %d unreadable (%v)", n, bad, ok)
		}
		return writeSnapshotStream(r.tx, &stream)
	})
	if forms[packedNextEntry] < 40 || forms[packedBatchEntry] < 3 {
		t.Errorf("stored forms %v: want most members as next values, a full one every %d", forms, maxNextChain)
	}
	// A snapshot carries them plain; restored, they are stored as here.
	st, err := openStore(filepath.Join(t.TempDir(), storeFile))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	if err := st.db.Update(func(tx *bolt.Tx) error { return readSnapshotStream(tx, bufio.NewReader(&stream)) }); err != nil {
		t.Fatal(err)
	}
	c.a.store.view(func(r reader) error {
		return st.view(func(rr reader) error {
			for i := range uint64(len(logged)) {
				k := be64(st0.Size + i)
				if !bytes.Equal(r.get(bucketEntries, k), rr.get(bucketEntries, k)) {
					t.Errorf("entry %d stored otherwise after a snapshot", st0.Size+i)
				}
				if _, got, ok := rr.entry(st0.Size + i); !ok || !bytes.Equal(got, logged[i]) {
					t.Errorf("restored entry %d: %q", st0.Size+i, got)
				}
			}
			return nil
		})
	})
}
