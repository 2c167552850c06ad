package ledger

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	cmtproto "github.com/cometbft/cometbft/api/cometbft/types/v1"
	cmttypes "github.com/cometbft/cometbft/types"
	bolt "go.etcd.io/bbolt"

	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/trustroot"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// TestStateSync is issue 22's contract "a validator restored from a
// snapshot catches up and agrees", with every validator its own process:
// four validators that take snapshots and prune their blocks commit
// entries; one loses its disk (all but its signing state) while the
// others go on, so the blocks it would replay from genesis are gone; it
// restarts with state sync from a trust root taken from another
// validator, restores a peer's snapshot (chunk hashes and the log root
// against the light-client-verified app hash checked), follows the blocks
// after it, agrees with the others on the log, serves proofs of entries
// from before the snapshot, and votes: with another validator stopped,
// entries still commit only because it signs.
func TestStateSync(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	homes, err := GenerateTestnet(t.TempDir(), 4, TestnetOptions{ChainID: "statesync-test"})
	if err != nil {
		t.Fatal(err)
	}
	pn := &procNet{t: t, homes: homes, procs: make([]*child, 4)}
	opts := func(co childOptions) string {
		b, err := json.Marshal(co)
		if err != nil {
			t.Fatal(err)
		}
		return envChildOptions + "=" + string(b)
	}
	keeping := opts(childOptions{RetainBlocks: 4, SnapshotInterval: 8})
	start := func(i int, env string) {
		pn.procs[i] = startChild(t, envChildValidator, homes[i].Home, fmt.Sprintf("v%d", i), env)
	}
	for i := range homes {
		start(i, keeping)
	}
	for i := range homes {
		pn.procs[i].waitLine("ready", 60*time.Second)
	}
	pn.client(0).getJSON("/v1/validators", &pn.vals)
	key := newTestKey(t)
	n := 0
	note := func() *verify.SignedEntry {
		n++
		return signEntry(t, key, KindNote, map[string]any{"text": fmt.Sprintf("entry-%03d", n)})
	}
	for i := range 12 {
		pn.appendVia(i%4, note())
	}

	// v3 loses its disk; the others commit on and prune.
	pn.procs[3].stop()
	wipeData(t, homes[3].Home)
	deadline := time.Now().Add(90 * time.Second)
	for i := 0; ; i++ {
		pn.appendVia(i%3, note())
		if lightStatus(t, homes[0].APIURL, 1) == http.StatusNotFound && lightStatus(t, homes[1].APIURL, 1) == http.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the validators did not prune block 1 within 90 s")
		}
		time.Sleep(300 * time.Millisecond)
	}
	before := pn.waitAgree([]int{0, 1, 2}, uint64(n), 30*time.Second)

	// The trust root: derived from the pinned genesis hash (the set
	// followed from it must have signed the latest header) — and it is
	// the header v0 itself shows.
	g, err := lclient.New(homes[0].APIURL)
	if err != nil {
		t.Fatal(err)
	}
	gen, err := g.Genesis(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	th, thash, err := trustroot.FromGenesis(context.Background(), homes[1].APIURL, gen.Hash())
	if err != nil {
		t.Fatal(err)
	}
	if h0, hash0 := trustRoot(t, homes[0].APIURL); h0 == th && !bytes.Equal(hash0, thash) {
		t.Fatalf("trust root at height %d: %x from the genesis, %x from v0", th, thash, hash0)
	}
	if _, _, err := trustroot.FromGenesis(context.Background(), homes[1].APIURL, strings.Repeat("ab", 32)); err == nil {
		t.Fatal("a trust root under another genesis hash")
	}
	start(3, opts(childOptions{RetainBlocks: 4, SnapshotInterval: 8, StateSync: &StateSync{
		Peers: []string{homes[0].APIURL, homes[1].APIURL, homes[2].APIURL}, TrustHeight: th, TrustHash: thash}}))
	pn.procs[3].waitLine("ready", 60*time.Second)
	pn.appendVia(0, note())
	agreed := pn.waitAgree([]int{0, 1, 2, 3}, before.Size+1, 120*time.Second)
	if code := lightStatus(t, homes[3].APIURL, 1); code != http.StatusNotFound {
		t.Fatalf("the restored validator holds block 1 (%d): it replayed instead of restoring", code)
	}

	// It serves proofs of entries from before its snapshot, against a
	// checkpoint it gives and the others cosigned.
	cp := pn.client(3).verifiedCheckpoint(agreed.Size)
	for _, i := range []uint64{0, 5, agreed.Size - 1} {
		if err := pn.client(3).checkInclusion(i, cp); err != nil {
			t.Fatalf("restored validator, entry %d: %v", i, err)
		}
	}

	// It votes: with v2 stopped, three of four are needed.
	pn.procs[2].stop()
	rc := pn.appendVia(3, note())
	pn.waitAgree([]int{0, 1, 3}, rc.Index+1, 60*time.Second)
	for _, i := range []int{0, 1, 3} {
		pn.procs[i].stop()
	}
}

// wipeData removes a stopped validator's data, keeping its signing state
// (so that it never signs twice at a height it signed before).
func wipeData(t *testing.T, home string) {
	t.Helper()
	data := filepath.Join(home, "data")
	des, err := os.ReadDir(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		if de.Name() == "priv_validator_state.json" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(data, de.Name())); err != nil {
			t.Fatal(err)
		}
	}
}

func lightStatus(t *testing.T, base string, h int64) int {
	t.Helper()
	res, err := http.Get(fmt.Sprintf("%s/v1/light/%d", base, h))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// trustRoot returns the latest height of a validator and its header hash.
func trustRoot(t *testing.T, base string) (int64, []byte) {
	t.Helper()
	res, err := http.Get(base + "/v1/light/0")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var lj struct {
		LightBlock string `json:"light_block"`
	}
	if err := json.NewDecoder(res.Body).Decode(&lj); err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(lj.LightBlock)
	if err != nil {
		t.Fatal(err)
	}
	var pb cmtproto.LightBlock
	if err := pb.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	lb, err := cmttypes.LightBlockFromProto(&pb)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(lb.ChainID, "statesync") {
		t.Fatalf("light block of chain %q", lb.ChainID)
	}
	return lb.Height, lb.Hash()
}

// TestSnapshotRestoreChecks takes a snapshot of a ledger and restores it
// into an empty store: a chunk that does not match its hash is fetched
// again from another sender, a snapshot whose log root is not the
// verified app hash is refused and leaves the store empty, a node with
// state refuses any snapshot, and the good one restores the same log.
func TestSnapshotRestoreChecks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := openTestEmbedded(t, t.TempDir())
	defer e.Close()
	key := newTestKey(t)
	for i := range 5 {
		if _, err := e.Append(ctx, signEntry(t, key, KindNote, map[string]any{"n": i})); err != nil {
			t.Fatal(err)
		}
	}
	src, err := openSnapshots(t.TempDir(), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	var snap *abci.Snapshot
	var want committedState
	err = e.ln.store.view(func(r reader) error {
		if want, err = r.state(); err != nil {
			return err
		}
		snap, err = src.write(r, want.Height)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	chunk := func(i uint32) []byte {
		b, err := os.ReadFile(src.path(snap.Height, ".snap"))
		if err != nil {
			t.Fatal(err)
		}
		return b[int(i)*snapshotChunkSize : min(len(b), int(i+1)*snapshotChunkSize)]
	}

	dir := t.TempDir()
	st, err := openStore(filepath.Join(dir, storeFile))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	a, err := newApp(st, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if a.snaps, err = openSnapshots(dir, 0, 1); err != nil {
		t.Fatal(err)
	}
	offer := func(appHash []byte) abci.OfferSnapshotResult {
		res, err := a.OfferSnapshot(ctx, &abci.OfferSnapshotRequest{Snapshot: snap, AppHash: appHash})
		if err != nil {
			t.Fatal(err)
		}
		return res.Result
	}
	apply := func(i uint32, b []byte) *abci.ApplySnapshotChunkResponse {
		res, err := a.ApplySnapshotChunk(ctx, &abci.ApplySnapshotChunkRequest{Index: i, Chunk: b, Sender: "peer"})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	applyAll := func() abci.ApplySnapshotChunkResult {
		var res *abci.ApplySnapshotChunkResponse
		for i := range snap.Chunks {
			res = apply(i, chunk(i))
		}
		return res.Result
	}

	// A forged chunk: fetched again, its sender refused.
	if r := offer(want.Root[:]); r != abci.OFFER_SNAPSHOT_RESULT_ACCEPT {
		t.Fatalf("offer: %v", r)
	}
	bad := bytes.Clone(chunk(0))
	bad[len(bad)-2] ^= 1
	if res := apply(0, bad); res.Result != abci.APPLY_SNAPSHOT_CHUNK_RESULT_RETRY || len(res.RejectSenders) != 1 {
		t.Fatalf("forged chunk: %+v", res)
	}

	// A root that is not the verified app hash: refused, nothing kept.
	wrong := want.Root
	wrong[0] ^= 1
	if r := offer(wrong[:]); r != abci.OFFER_SNAPSHOT_RESULT_ACCEPT {
		t.Fatalf("offer: %v", r)
	}
	if r := applyAll(); r != abci.APPLY_SNAPSHOT_CHUNK_RESULT_REJECT_SNAPSHOT {
		t.Fatalf("snapshot under another app hash: %v", r)
	}
	if got, _ := a.state(); got.Height != 0 {
		t.Fatalf("a refused snapshot left height %d", got.Height)
	}

	// The real one.
	if r := offer(want.Root[:]); r != abci.OFFER_SNAPSHOT_RESULT_ACCEPT {
		t.Fatalf("offer: %v", r)
	}
	if r := applyAll(); r != abci.APPLY_SNAPSHOT_CHUNK_RESULT_ACCEPT {
		t.Fatalf("restore: %v", r)
	}
	if got, vs := a.state(); got != want || vs == nil {
		t.Fatalf("restored state %+v (set %v), want %+v", got, vs != nil, want)
	}
	info, _ := a.Info(ctx, &abci.InfoRequest{})
	if info.LastBlockHeight != want.Height || !bytes.Equal(info.LastBlockAppHash, want.Root[:]) {
		t.Fatalf("Info after restore: %+v", info)
	}
	if r := offer(want.Root[:]); r != abci.OFFER_SNAPSHOT_RESULT_ABORT {
		t.Fatalf("a node with state took a snapshot: %v", r)
	}
}

// TestSnapshotStreamRefusesDisorder: a stream whose keys are out of
// order, or that names a bucket the ledger does not have, is refused.
func TestSnapshotStreamRefusesDisorder(t *testing.T) {
	t.Parallel()
	st, err := openStore(filepath.Join(t.TempDir(), storeFile))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	rec := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = appendBytes(b, p)
		}
		return b
	}
	cases := map[string][]byte{
		"keys out of order": slices.Concat([]byte(snapshotMagic), []byte("B"), rec([]byte("nonces")),
			[]byte("K"), rec([]byte("b"), []byte("1")), []byte("K"), rec([]byte("a"), []byte("2")), []byte("E")),
		"unknown bucket": slices.Concat([]byte(snapshotMagic), []byte("B"), rec([]byte("elsewhere")), []byte("E")),
		"trailing bytes": slices.Concat([]byte(snapshotMagic), []byte("EE")),
		"no end":         []byte(snapshotMagic),
	}
	for name, stream := range cases {
		err := st.db.Update(func(tx *bolt.Tx) error {
			return readSnapshotStream(tx, bufio.NewReader(bytes.NewReader(stream)))
		})
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
