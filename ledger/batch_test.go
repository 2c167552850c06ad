package ledger

import (
	"bytes"
	"context"
	"strings"
	"testing"

	abci "github.com/cometbft/cometbft/abci/types"

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
	c.a.store.view(func(r reader) error {
		for i, want := range [][]byte{txs[0], txs[1], txs[3], txs[2], txs[4]} {
			_, got, ok := r.entry(st0.Size + uint64(i))
			if !ok || !bytes.Equal(got, want) {
				t.Errorf("entry %d: %q, want %q", st0.Size+uint64(i), got, want)
			}
		}
		return nil
	})
}
