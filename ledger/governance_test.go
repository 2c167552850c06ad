package ledger

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// TestGovernanceABCI drives the application through a fifth validator's
// admission, a removal and a key rotation: each change is decided only
// when more than 2/3 of the current set's power signed, consensus gets the
// updates, checkpoints are signed by the new set from two blocks later,
// and the chain of changes served to clients follows from the genesis.
func TestGovernanceABCI(t *testing.T) {
	t.Parallel()
	keys := []ed25519.PrivateKey{seedKey(0xa1), seedKey(0xa2), seedKey(0xa3), seedKey(0xa4)}
	t0 := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	c, err := newABCIChain(t, "gov-test", []byte(`{"rules_version":6}`), keys, t0)
	if err != nil {
		t.Fatal(err)
	}
	nonce := uint64(0)
	entry := func(k ed25519.PrivateKey, kind verify.Kind, body any) []byte {
		nonce++
		se, err := verify.NewEntryWithNonce(k, kind, body, nonce, c.at(c.height+1))
		if err != nil {
			t.Fatal(err)
		}
		return se.Encode()
	}
	pub := func(k ed25519.PrivateKey) string { return protocol.FormatEd25519Key(k.Public().(ed25519.PublicKey)) }
	want := func(fb *abci.FinalizeBlockResponse, w ...string) {
		t.Helper()
		skip := len(fb.TxResults) - len(w)
		for i, code := range w {
			r := fb.TxResults[skip+i]
			if got := codeFromABCI(r.Code); r.Code == 0 && code != "ok" || r.Code != 0 && got != code {
				t.Errorf("height %d tx %d: code %d (%s), want %s", c.height, i, r.Code, r.Log, code)
			}
		}
	}
	size := func() uint64 { st, _ := c.a.state(); return st.Size }
	approve := func(k ed25519.PrivateKey, idx uint64, tx []byte) []byte {
		leaf := verify.LeafHash(tx)
		return entry(k, KindValidatorApproved, map[string]any{"proposal": idx, "hash": hex.EncodeToString(leaf[:])})
	}
	c.block()
	fifth := seedKey(0xa5)
	outsider := seedKey(0xb0)

	// Add: an outsider cannot propose; proposer + 1 of 4 is not enough.
	idx := size() + 1 // after the outsider's refused proposal: index of the real one
	prop := entry(keys[0], KindValidatorProposed, map[string]any{"change": "add", "validator": pub(fifth), "power": 1, "set": 0})
	fb := c.block(entry(outsider, KindValidatorProposed, map[string]any{"change": "add", "validator": pub(outsider), "power": 1, "set": 0}), prop)
	want(fb, verify.CodeUnauthorized, "ok")
	idx = size() - 1
	fb = c.block(approve(keys[1], idx, prop), approve(outsider, idx, prop), approve(keys[1], idx, prop))
	want(fb, "ok", verify.CodeUnauthorized, verify.CodeReplay)
	if len(fb.ValidatorUpdates) != 0 {
		t.Fatalf("decided with 2 of 4: %v", fb.ValidatorUpdates)
	}
	fb = c.block(approve(keys[2], idx, prop))
	want(fb, "ok")
	if len(fb.ValidatorUpdates) != 1 || fb.ValidatorUpdates[0].Power != 1 || !ed25519.PublicKey(fb.ValidatorUpdates[0].PubKeyBytes).Equal(fifth.Public()) {
		t.Fatalf("validator updates %v, want the fifth key with power 1", fb.ValidatorUpdates)
	}
	decided := c.height
	c.block() // decided+1: the old set still votes
	c.keys = append(c.keys, fifth)
	c.block() // decided+2: the new set votes; the next block's checkpoint is theirs
	c.block()
	if n := len(c.a.setAt(c.height).members); n != 5 {
		t.Fatalf("set at %d has %d members", c.height, n)
	}
	// A late approval of a decided proposal is refused.
	fb = c.block(approve(keys[3], idx, prop))
	want(fb, verify.CodeReplay)

	// Remove keys[3]: 4 of 5 needed (more than 2/3 of 5 is 4).
	prop = entry(keys[0], KindValidatorProposed, map[string]any{"change": "remove", "validator": pub(keys[3]), "set": 1})
	stale := entry(keys[0], KindValidatorProposed, map[string]any{"change": "remove", "validator": pub(keys[2]), "set": 0})
	fb = c.block(stale, prop)
	want(fb, verify.CodeReplay, "ok")
	idx = size() - 1
	fb = c.block(approve(keys[1], idx, prop), approve(fifth, idx, prop))
	if len(fb.ValidatorUpdates) != 0 {
		t.Fatalf("decided with 3 of 5")
	}
	fb = c.block(approve(keys[3], idx, prop))
	if len(fb.ValidatorUpdates) != 1 || fb.ValidatorUpdates[0].Power != 0 {
		t.Fatalf("validator updates %v, want keys[3] with power 0", fb.ValidatorUpdates)
	}
	c.block()
	c.keys = []ed25519.PrivateKey{keys[0], keys[1], keys[2], fifth}
	c.block()
	c.block()

	// Rotate keys[1] to a new key: proposed by keys[1] itself.
	rotated := seedKey(0xa6)
	fb = c.block(entry(keys[0], KindValidatorProposed, map[string]any{"change": "rotate", "validator": pub(keys[1]), "new_key": pub(rotated), "set": 2}))
	want(fb, verify.CodeUnauthorized)
	prop = entry(keys[1], KindValidatorProposed, map[string]any{"change": "rotate", "validator": pub(keys[1]), "new_key": pub(rotated), "set": 2})
	fb = c.block(prop)
	idx = size() - 1
	fb = c.block(approve(keys[0], idx, prop), approve(keys[2], idx, prop))
	want(fb, "ok", "ok")
	if len(fb.ValidatorUpdates) != 2 {
		t.Fatalf("rotation updates %v, want the old key out and the new one in", fb.ValidatorUpdates)
	}
	c.block()
	c.keys = []ed25519.PrivateKey{keys[0], rotated, keys[2], fifth}
	c.block()
	c.block()
	c.block(entry(rotated, KindNote, map[string]any{"after": "rotation"}))

	// A client holding only the genesis follows the chain of changes.
	h := c.a.store
	var g *verify.Genesis
	var changes []verify.ValidatorChange
	err = h.view(func(r reader) error {
		var err error
		if g, err = readGenesis(r); err != nil {
			return err
		}
		for v := uint64(1); v <= 3; v++ {
			ch, err := readChange(r, v)
			if err != nil {
				return err
			}
			changes = append(changes, *ch)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if g.Threshold != verify.DefaultThreshold || len(g.Validators) != 4 {
		t.Fatalf("genesis %+v", g)
	}
	vs, err := g.Set()
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range changes {
		if vs, err = vs.Follow(&ch, g.Threshold); err != nil {
			t.Fatal(err)
		}
	}
	if _, cur := c.a.state(); !vs.Equal(cur.public) {
		t.Fatalf("followed set differs from the chain's: %s", vs.Diff(cur.public))
	}
	if decided != changes[0].Height {
		t.Fatalf("change 1 decided at %d, recorded %d", decided, changes[0].Height)
	}
	// Tampering: dropping an approval leaves too little power.
	bad := changes[0]
	bad.Approvals = bad.Approvals[:1]
	g0, _ := g.Set()
	if _, err := g0.Follow(&bad, g.Threshold); err == nil {
		t.Fatal("a change with 2 of 4 signatures followed")
	}
	b, _ := json.Marshal(changes[0])
	t.Logf("change 1: %d bytes", len(b))
}
