package ledger

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cfg "github.com/cometbft/cometbft/config"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// TestGovernanceProcesses runs four validators as processes and, by
// governance only, adds a fifth, removes one and rotates another's key:
// commits continue throughout, a change signed by too few is never
// decided, and clients that pinned only the genesis hash follow every
// change (one from before the changes, one from scratch after them).
func TestGovernanceProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	pn := startProcNet(t, 4)
	user := newTestKey(t)
	n := 0
	note := func(via int) {
		t.Helper()
		n++
		pn.appendVia(via, signEntry(t, user, KindNote, map[string]any{"text": fmt.Sprintf("gov-%03d", n)}))
	}
	vkey := func(home string) ed25519.PrivateKey {
		t.Helper()
		k, err := ValidatorKey(home)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	keyText := func(k ed25519.PublicKey) string { return protocol.FormatEd25519Key(k) }
	submit := func(via int, k ed25519.PrivateKey, kind verify.Kind, body any) (int, []byte) {
		se, err := verify.NewEntry(k, kind, body)
		if err != nil {
			t.Fatal(err)
		}
		return pn.client(via).do("POST", "/v1/entries", se.Encode())
	}
	propose := func(via, signer int, body map[string]any) uint64 {
		t.Helper()
		status, b := submit(via, vkey(pn.homes[signer].Home), KindValidatorProposed, body)
		if status != 200 {
			t.Fatalf("proposal %v: %d %s", body, status, b)
		}
		var rc receiptJSON
		json.Unmarshal(b, &rc)
		return rc.Index
	}
	approve := func(via int, k ed25519.PrivateKey, idx uint64) (int, []byte) {
		t.Helper()
		leaf := verify.LeafHash(pn.entryVia(via, idx).Entry)
		return submit(via, k, KindValidatorApproved, map[string]any{"proposal": idx, "hash": hex.EncodeToString(leaf[:])})
	}
	mustApprove := func(via, signer int, idx uint64) {
		t.Helper()
		if status, b := approve(via, vkey(pn.homes[signer].Home), idx); status != 200 {
			t.Fatalf("approval of %d by v%d: %d %s", idx, signer, status, b)
		}
	}
	// waitSet waits until validator via serves a set of want members
	// whose version is version (it is in force from the next block).
	waitSet := func(via int, version uint64, want int) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			var ch struct {
				Version uint64 `json:"version"`
			}
			var vs validatorsJSON
			pn.client(via).getJSON("/v1/validators/changes?from=1", &ch)
			pn.client(via).getJSON("/v1/validators", &vs)
			if ch.Version == version && len(vs.Validators) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("v%d: set version %d with %d validators after 90s, want %d with %d", via, ch.Version, len(vs.Validators), version, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// The genesis hash, from the genesis file the operators share.
	c := cfg.DefaultConfig()
	c.SetRoot(pn.homes[0].Home)
	genJSON, err := os.ReadFile(c.GenesisFile())
	if err != nil {
		t.Fatal(err)
	}
	gen, err := GenesisOf(genJSON)
	if err != nil {
		t.Fatal(err)
	}
	hash := gen.Hash()
	ctx := context.Background()
	early, err := client.New(pn.homes[0].APIURL, client.WithGenesis(hash))
	if err != nil {
		t.Fatal(err)
	}
	earlyState := filepath.Join(t.TempDir(), "early.json")
	for range 3 {
		note(0)
	}
	pn.waitAgree([]int{0, 1, 2, 3}, 3, 60*time.Second)
	if res, err := early.Verify(ctx, earlyState, nil); err != nil || res.SetVersion != 0 || res.FirstUse {
		t.Fatalf("verify before the changes: %+v %v", res, err)
	}

	// 1. A fifth validator joins: its node follows the chain, and the set
	// admits its key when v0 proposes and v1, v2 approve (3 of 4).
	joined, pub4, err := JoinTestnet(filepath.Join(t.TempDir(), "v4"), pn.homes)
	if err != nil {
		t.Fatal(err)
	}
	pn.homes = append(pn.homes, joined)
	pn.procs = append(pn.procs, nil)
	pn.start(4)
	pn.procs[4].waitLine("ready", 60*time.Second)
	idx := propose(0, 0, map[string]any{"change": "add", "validator": keyText(pub4), "power": 1, "set": 0})
	mustApprove(1, 1, idx)
	note(2)
	var ch struct {
		Version uint64 `json:"version"`
	}
	pn.client(0).getJSON("/v1/validators/changes", &ch)
	if ch.Version != 0 {
		t.Fatalf("decided with 2 of 4: set version %d", ch.Version)
	}
	mustApprove(2, 2, idx)
	waitSet(0, 1, 5)
	for i := range 5 {
		note(i % 4)
	}
	pn.waitAgree([]int{0, 1, 2, 3, 4}, uint64(n), 120*time.Second)

	// 2. v3 leaves: 4 of 5 sign; then its process stops and commits go on.
	idx = propose(0, 0, map[string]any{"change": "remove", "validator": keyText(vkey(pn.homes[3].Home).Public().(ed25519.PublicKey)), "set": 1})
	mustApprove(1, 1, idx)
	mustApprove(4, 4, idx)
	note(0)
	pn.client(0).getJSON("/v1/validators/changes", &ch)
	if ch.Version != 1 {
		t.Fatalf("removal decided with 3 of 5: set version %d", ch.Version)
	}
	mustApprove(2, 2, idx)
	waitSet(0, 2, 4)
	note(1)
	pn.procs[3].stop()
	for i := range 4 {
		note([]int{0, 1, 2, 4}[i])
	}
	pn.waitAgree([]int{0, 1, 2, 4}, uint64(n), 90*time.Second)
	removed := vkey(pn.homes[3].Home)
	if status, b := submit(0, removed, KindValidatorProposed, map[string]any{"change": "remove", "validator": keyText(pub4), "set": 2}); status == 200 || !strings.Contains(string(b), "not a validator") {
		t.Fatalf("a removed validator's proposal: %d %s", status, b)
	}

	// 3. v2 rotates its key: it proposes (signed with the old key), v0 and
	// v1 approve (3 of 4); once in force v2 restarts with the new key.
	next := filepath.Join(t.TempDir(), "v2-next")
	id, err := GenerateValidatorKeys(next)
	if err != nil {
		t.Fatal(err)
	}
	old2 := vkey(pn.homes[2].Home)
	idx = propose(2, 2, map[string]any{"change": "rotate", "validator": keyText(old2.Public().(ed25519.PublicKey)), "new_key": keyText(id.PubKey), "set": 2})
	mustApprove(0, 0, idx)
	mustApprove(1, 1, idx)
	waitSet(0, 3, 4)
	note(0) // the new set is in force once a block past the change commits
	note(1)
	pn.procs[2].stop()
	kb, err := os.ReadFile(filepath.Join(next, ValidatorKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	c.SetRoot(pn.homes[2].Home)
	if err := os.WriteFile(c.PrivValidatorKeyFile(), kb, 0o600); err != nil {
		t.Fatal(err)
	}
	note(0) // v0, v1 and v4 hold 3 of 4
	pn.start(2)
	pn.procs[2].waitLine("ready", 60*time.Second)
	for i := range 6 {
		note([]int{0, 1, 2, 4}[i%4])
	}
	pn.waitAgree([]int{0, 1, 2, 4}, uint64(n), 120*time.Second)
	if status, b := submit(2, old2, KindNote, map[string]any{"old": "key"}); status != 200 {
		t.Fatalf("a note by anyone, even a rotated-away key: %d %s", status, b)
	}
	n++
	if status, b := approve(0, old2, idx); status == 200 {
		t.Fatalf("the rotated-away key approved: %s", b)
	}

	// 4. Too few: v0 proposes removing v1 and only v4 approves (2 of 4).
	idx = propose(0, 0, map[string]any{"change": "remove", "validator": keyText(vkey(pn.homes[1].Home).Public().(ed25519.PublicKey)), "set": 3})
	mustApprove(4, 4, idx)
	if status, b := approve(0, removed, idx); status == 200 || !strings.Contains(string(b), verify.CodeUnauthorized) {
		t.Fatalf("approval by the removed v3: %d %s", status, b)
	}
	for i := range 3 {
		note(i)
	}
	agreed := pn.waitAgree([]int{0, 1, 2, 4}, uint64(n), 90*time.Second)
	pn.client(2).getJSON("/v1/validators/changes", &ch)
	if ch.Version != 3 {
		t.Fatalf("a removal approved by 2 of 4 was decided: set version %d", ch.Version)
	}

	// Clients that pinned only the genesis hash follow all three changes
	// (asking v0 and v4: both must have stored the checkpoint).
	waitCheckpoint := func(min uint64) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			st0, err0 := pn.status(0)
			st4, err4 := pn.status(4)
			if err0 == nil && err4 == nil && st0.CheckpointSize != nil && *st0.CheckpointSize >= min &&
				st4.CheckpointSize != nil && *st4.CheckpointSize >= min {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no checkpoint of %d entries within 60s", min)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitCheckpoint(agreed.Size)
	res, err := early.Verify(ctx, earlyState, nil)
	if err != nil || res.SetVersion != 3 || res.SetChanges != 3 {
		t.Fatalf("the early client: %+v %v", res, err)
	}
	fresh, _ := client.New(pn.homes[4].APIURL, client.WithGenesis(hash))
	last := agreed.Size - 1
	res, err = fresh.Verify(ctx, filepath.Join(t.TempDir(), "fresh.json"), &last)
	if err != nil || res.SetVersion != 3 || res.FirstUse {
		t.Fatalf("a new client from the genesis hash: %+v %v", res, err)
	}
	m, err := fresh.FollowGenesis(ctx, hash)
	if err != nil {
		t.Fatal(err)
	}
	if m.Set.Power(id.PubKey) != 1 || m.Set.Power(pub4) != 1 || m.Set.Power(removed.Public().(ed25519.PublicKey)) != 0 || m.Set.Power(old2.Public().(ed25519.PublicKey)) != 0 {
		t.Fatalf("followed set: %+v", m.Set.Validators)
	}
	wrong, _ := client.New(pn.homes[0].APIURL, client.WithGenesis(strings.Repeat("ab", 32)))
	if _, err := wrong.Verify(ctx, filepath.Join(t.TempDir(), "wrong.json"), nil); !errors.Is(err, client.ErrGenesis) {
		t.Fatalf("another genesis hash: %v", err)
	}
	for _, i := range []int{0, 1, 2, 4} {
		pn.procs[i].stop()
	}
}

// TestReferenceValuesProcesses runs four validators as processes: one
// validator's reference.values is refused; values proposed by v0 and
// approved by v1 (2 of 4) are not in force, and a registration they
// would refuse commits; once v2 approves (3 of 4) every validator serves
// them and refuses registrations whose evidence fails them, with the
// reason, while the validators keep agreeing on the log.
func TestReferenceValuesProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	pn := startProcNet(t, 4)
	defer func() {
		for _, p := range pn.procs {
			p.stop()
		}
	}()
	vkey := func(i int) ed25519.PrivateKey {
		t.Helper()
		k, err := ValidatorKey(pn.homes[i].Home)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	post := func(via int, se *verify.SignedEntry) (int, receiptJSON, string) {
		status, b := pn.client(via).do("POST", "/v1/entries", se.Encode())
		var rc receiptJSON
		json.Unmarshal(b, &rc)
		return status, rc, string(b)
	}
	good := sha256.Sum256([]byte("agreed runtime"))
	other := sha256.Sum256([]byte("another runtime"))
	register := func(m [32]byte) *verify.SignedEntry {
		k := newTestKey(t)
		b := nodeBody(k.Public().(ed25519.PublicKey))
		b["evidence"] = softwareEvidence(t, k, m, time.Now().Add(-5*time.Second))
		return signEntry(t, k, KindNodeRegistered, b)
	}
	values := map[string]any{"class": "software", "measurements": []string{hex.EncodeToString(good[:])}}
	inForce := func(via int) uint64 {
		var rv struct {
			Index uint64 `json:"index"`
		}
		if status, b := pn.client(via).do("GET", "/v1/reference-values/software", nil); status == 200 {
			json.Unmarshal(b, &rv)
		}
		return rv.Index
	}

	if status, _, b := post(0, signEntry(t, vkey(0), KindReferenceValues, values)); status == 200 || !strings.Contains(b, "one validator cannot set") {
		t.Fatalf("one validator's reference.values: %d %s", status, b)
	}
	status, prop, b := post(0, signEntry(t, vkey(0), KindValidatorProposed, map[string]any{"change": ChangeReferenceValues, "values": values, "set": 0}))
	if status != 200 {
		t.Fatalf("proposal: %d %s", status, b)
	}
	approve := func(via int) {
		t.Helper()
		leaf := verify.LeafHash(pn.entryVia(via, prop.Index).Entry)
		if status, _, b := post(via, signEntry(t, vkey(via), KindValidatorApproved, map[string]any{"proposal": prop.Index, "hash": hex.EncodeToString(leaf[:])})); status != 200 {
			t.Fatalf("approval by v%d: %d %s", via, status, b)
		}
	}
	approve(1)
	if status, _, b := post(2, register(other)); status != 200 || inForce(2) != 0 {
		t.Fatalf("with 2 of 4 approvals: registration %d %s; values in force from entry %d", status, b, inForce(2))
	}
	approve(2)
	for i := range 4 {
		for deadline := time.Now().Add(30 * time.Second); inForce(i) != prop.Index; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("v%d: the decided values are not in force after 30s", i)
			}
		}
	}
	want := fmt.Sprintf("fails the consortium's reference values (entry %d)", prop.Index)
	if status, _, b := post(3, register(other)); status == 200 || !strings.Contains(b, want) || !strings.Contains(b, "allow-list") {
		t.Fatalf("registration failing the decided values: %d %s", status, b)
	}
	status, rc, b := post(3, register(good))
	if status != 200 {
		t.Fatalf("registration passing the decided values: %d %s", status, b)
	}
	pn.waitAgree([]int{0, 1, 2, 3}, rc.Index+1, 60*time.Second)
}

// entryVia waits up to 30 s for validator via to serve entry idx.
func (pn *procNet) entryVia(via int, idx uint64) entryJSON {
	pn.t.Helper()
	var e entryJSON
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		status, b := pn.client(via).do("GET", fmt.Sprintf("/v1/entries/%d", idx), nil)
		if status == 200 {
			json.Unmarshal(b, &e)
			return e
		}
		if time.Now().After(deadline) {
			pn.t.Fatalf("v%d has no entry %d after 30s: %d %s", via, idx, status, b)
		}
	}
}
