package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/cloisterhq/cloister/ledger/verify"
)

func statePath(t *testing.T) string { return filepath.Join(t.TempDir(), "state", "ledger.json") }

// verifyFails runs Verify and checks that it fails with kind and that the
// message contains each of want; the state file must be unchanged.
func verifyFails(t *testing.T, c *Client, path string, index *uint64, kind error, want ...string) {
	t.Helper()
	before, _ := os.ReadFile(path)
	_, err := c.Verify(context.Background(), path, index)
	if err == nil {
		t.Fatalf("Verify succeeded, want %v", kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("Verify error %q is not %v", err, kind)
	}
	var ve *verify.VerificationError
	if !errors.As(err, &ve) {
		t.Fatalf("Verify error %T is not a *verify.VerificationError", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Verify error %q lacks %q", err, w)
		}
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Errorf("state file changed by a failed verification")
	}
}

func mustVerify(t *testing.T, c *Client, path string, index *uint64) *VerifyResult {
	t.Helper()
	res, err := c.Verify(context.Background(), path, index)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return res
}

func TestVerifyTrustOnFirstUseThenExtension(t *testing.T) {
	t.Parallel()
	tl := newTestLedger(t)
	tl.addEntries(5, "first")
	c := tl.client()
	path := statePath(t)

	res := mustVerify(t, c, path, nil)
	if !res.FirstUse || res.Previous != nil || res.Checkpoint.Size != 5 || res.Checkpoint.Root != tl.log.root(t, 5) {
		t.Fatalf("first use: %+v", res)
	}
	if len(res.Checkpoint.Signers) != 4 || res.Checkpoint.SignedPower != 40 || res.Checkpoint.TotalPower != 40 {
		t.Fatalf("signers %v power %d/%d", res.Checkpoint.Signers, res.Checkpoint.SignedPower, res.Checkpoint.TotalPower)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	st, err := LoadState(path)
	if err != nil || st == nil {
		t.Fatalf("LoadState: %v", err)
	}
	if st.Origin != "cloister.ledger/test-chain" || !st.Validators.Equal(tl.validatorSet()) {
		t.Fatalf("state %+v", st)
	}

	// The log grows: the new checkpoint must be proven to extend the old.
	tl.addEntries(9, "more")
	res = mustVerify(t, c, path, u64(12))
	if res.FirstUse || res.Previous.Size != 5 || res.Checkpoint.Size != 14 {
		t.Fatalf("second run: first %v previous %d now %d", res.FirstUse, res.Previous.Size, res.Checkpoint.Size)
	}
	if res.Entry == nil || res.Entry.Index != 12 || !bytes.Equal(res.Entry.Tx, tl.log.txs[12]) {
		t.Fatalf("entry %+v", res.Entry)
	}
	st, _ = LoadState(path)
	cp, _ := st.TrustedCheckpoint()
	if cp.Size != 14 {
		t.Fatalf("state checkpoint size %d, want 14", cp.Size)
	}

	// Same size again: nothing to prove, still fine.
	res = mustVerify(t, c, path, u64(0))
	if res.Previous.Size != 14 || res.Checkpoint.Size != 14 {
		t.Fatalf("third run %d → %d", res.Previous.Size, res.Checkpoint.Size)
	}
}

func TestVerifyEmptyLogThenGrowth(t *testing.T) {
	t.Parallel()
	tl := newTestLedger(t, 1)
	c := tl.client()
	path := statePath(t)
	if res := mustVerify(t, c, path, nil); res.Checkpoint.Size != 0 {
		t.Fatalf("size %d", res.Checkpoint.Size)
	}
	verifyFails(t, c, path, u64(0), verify.ErrNotIncluded, "entry 0 is not covered by the latest checkpoint (size 0)")
	tl.addEntries(3, "x")
	if res := mustVerify(t, c, path, u64(2)); res.Checkpoint.Size != 3 {
		t.Fatalf("size %d", res.Checkpoint.Size)
	}
}

// A fork: the validators signed two different logs. The client that saw
// one must reject the other, whether it is the same size or longer.
func TestVerifyDetectsFork(t *testing.T) {
	t.Parallel()
	tl := newTestLedger(t)
	tl.addEntries(10, "a")
	c := tl.client()
	path := statePath(t)
	mustVerify(t, c, path, nil)

	honest := tl.log
	fork := honest.clone(t, 6)
	fork.add(t, tl.entry("a different entry at index 6").Encode())
	for _, tx := range honest.txs[7:] {
		fork.add(t, tx)
	}
	tl.set(func(tl *testLedger) { tl.log = fork })
	verifyFails(t, c, path, nil, verify.ErrInconsistent, "checkpoint at size 10 has root", "two different logs were signed", "possible fork or rewrite")

	tl.set(func(tl *testLedger) { tl.log = fork })
	tl.addEntries(2, "fork continues")
	verifyFails(t, c, path, nil, verify.ErrInconsistent,
		"consistency proof from size 10 to 12 does not verify: the server's log is not an extension of the one trusted at size 10 — possible fork or rewrite")

	// The honest log, extended, still verifies against the same state.
	tl.set(func(tl *testLedger) { tl.log = honest })
	tl.addEntries(2, "honest continues")
	if res := mustVerify(t, c, path, nil); res.Checkpoint.Size != 12 {
		t.Fatalf("honest size %d", res.Checkpoint.Size)
	}
}

func TestVerifyDetectsRewoundLog(t *testing.T) {
	t.Parallel()
	tl := newTestLedger(t)
	tl.addEntries(8, "a")
	c := tl.client()
	path := statePath(t)
	mustVerify(t, c, path, nil)
	tl.set(func(tl *testLedger) { tl.log = tl.log.clone(t, 5) })
	verifyFails(t, c, path, nil, verify.ErrRewound, "server shows an older/rewound log", "size 5", "size 8 was trusted before")
}

func TestVerifyRejectsTamperedConsistencyProof(t *testing.T) {
	t.Parallel()
	tl := newTestLedger(t)
	tl.addEntries(5, "a")
	c := tl.client()
	path := statePath(t)
	mustVerify(t, c, path, nil)
	tl.addEntries(6, "b")
	tl.set(func(tl *testLedger) { tl.mutate = flipFirstHash(t) })
	verifyFails(t, c, path, nil, verify.ErrInconsistent, "consistency proof from size 5 to 11 does not verify")
	tl.set(func(tl *testLedger) { tl.mutate = nil })
	mustVerify(t, c, path, nil)
}

func TestVerifyRejectsFlippedInclusionHash(t *testing.T) {
	t.Parallel()
	tl := newTestLedger(t)
	tl.addEntries(9, "a")
	c := tl.client()
	path := statePath(t)
	tl.set(func(tl *testLedger) { tl.mutate = flipFirstHash(t) })
	verifyFails(t, c, path, u64(4), verify.ErrNotIncluded, "inclusion proof for entry 4", "does not verify against the checkpoint root")
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed first verification wrote the state file (%v)", err)
	}
}

func TestVerifyRejectsTamperedEntry(t *testing.T) {
	t.Parallel()
	tl := newTestLedger(t)
	tl.addEntries(6, "a")
	c := tl.client()
	path := statePath(t)
	mustVerify(t, c, path, nil)
	orig := tl.log.txs[3]

	// Bytes altered, leaf hash left as it was.
	tl.set(func(tl *testLedger) {
		tl.mutate = func(p string, b []byte) []byte {
			if p != "/v1/entries/3" {
				return b
			}
			return bytes.Replace(b, []byte(`"text":"a 3"`), []byte(`"text":"a 9"`), 1)
		}
	})
	verifyFails(t, c, path, u64(3), verify.ErrNotIncluded, "entry 3 as served does not hash to the leaf hash the server reports")

	// Another validly signed entry served at index 3, with a matching
	// leaf hash and inclusion proof of the real leaf: the client's own
	// leaf hash is not the one proven.
	other := tl.entry("impostor").Encode()
	tl.set(func(tl *testLedger) {
		tl.mutate = func(p string, b []byte) []byte {
			if p != "/v1/entries/3" {
				return b
			}
			b = bytes.Replace(b, orig, other, 1)
			lh, nh := verify.LeafHash(orig), verify.LeafHash(other)
			return bytes.Replace(b, []byte(b64h(lh)), []byte(b64h(nh)), 1)
		}
	})
	verifyFails(t, c, path, u64(3), verify.ErrNotIncluded, "inclusion proof for entry 3 is for leaf hash", "but the entry hashes to")

	// Same, and the proof's leaf hash rewritten too: the audit path fails.
	tl.set(func(tl *testLedger) {
		inner := tl.mutate
		tl.mutate = func(p string, b []byte) []byte {
			b = inner(p, b)
			if p == "/v1/proof/inclusion" {
				lh, nh := verify.LeafHash(orig), verify.LeafHash(other)
				b = bytes.Replace(b, []byte(b64h(lh)), []byte(b64h(nh)), 1)
			}
			return b
		}
	})
	verifyFails(t, c, path, u64(3), verify.ErrNotIncluded, "does not verify against the checkpoint root")
}

func TestVerifyRejectsBadEntrySignature(t *testing.T) {
	t.Parallel()
	tl := newTestLedger(t)
	se := tl.entry("signed")
	se.Signature[5] ^= 1 // a log that contains an entry whose signature is wrong
	tl.set(func(tl *testLedger) { tl.log.add(t, se.Encode()) })
	tl.addEntries(2, "b")
	verifyFails(t, tl.client(), statePath(t), u64(0), verify.ErrEntrySignature, "entry 0 is in the log, but its signature does not verify")
}

func TestVerifyQuorumStrictlyMoreThanTwoThirds(t *testing.T) {
	t.Parallel()
	cases := []struct {
		powers  []int64
		signers []int
		ok      bool
	}{
		{[]int64{1, 1, 1}, []int{0}, false},             // 1/3
		{[]int64{1, 1, 1}, []int{0, 1}, false},          // exactly 2/3
		{[]int64{1, 1, 1}, []int{0, 1, 2}, true},        // all
		{[]int64{10, 10, 10, 10}, []int{0, 1, 2}, true}, // 3/4
		{[]int64{1, 1, 1, 3}, []int{1, 3}, false},       // 4/6 = exactly 2/3
		{[]int64{1, 1, 1, 3}, []int{0, 1, 3}, true},     // 5/6
		{[]int64{1, 1, 1, 3}, []int{0, 1, 2}, false},    // 3/6: many signers, little power
		{[]int64{5}, []int{}, false},                    // nobody of the set (an outsider signs)
	}
	outsider := newTestValidator(t, "test-chain", 5)
	for _, tc := range cases {
		tl := newTestLedger(t, tc.powers...)
		tl.addEntries(2, "a")
		tl.set(func(tl *testLedger) {
			tl.signers = tc.signers
			if len(tc.signers) == 0 {
				tl.extraSigs = []note.Signer{outsider.signer}
			}
		})
		c := tl.client()
		path := statePath(t)
		if tc.ok {
			mustVerify(t, c, path, nil)
			continue
		}
		verifyFails(t, c, path, nil, verify.ErrQuorum, "more than 2/3")
	}
}

func TestVerifyCheckpointSignatures(t *testing.T) {
	t.Parallel()
	tl := newTestLedger(t, 1, 1, 1)
	tl.addEntries(2, "a")
	c := tl.client()
	path := statePath(t)

	// Signatures by keys outside the set do not count toward the quorum.
	outsiders := newTestLedger(t, 1, 1, 1)
	tl.set(func(tl *testLedger) {
		tl.signers = []int{0, 1}
		tl.extraSigs = []note.Signer{outsiders.vals[0].signer, outsiders.vals[1].signer}
	})
	verifyFails(t, c, path, nil, verify.ErrQuorum, "power 2 of 3")

	// A pinned validator's broken signature fails the checkpoint.
	tl.set(func(tl *testLedger) { tl.signers, tl.extraSigs, tl.badSigBy = []int{0, 1}, nil, 3 })
	verifyFails(t, c, path, nil, verify.ErrBadCheckpointSignature, "the signature of validator "+tl.vals[2].v.Name+" does not verify")
}

func TestVerifyWrongOrigin(t *testing.T) {
	t.Parallel()
	tl := newTestLedger(t)
	tl.addEntries(2, "a")
	c := tl.client()
	tl.set(func(tl *testLedger) { tl.origin = "cloister.ledger/other-chain" })
	verifyFails(t, c, statePath(t), nil, verify.ErrOrigin, `checkpoint origin "cloister.ledger/other-chain" is not the trusted ledger's origin "cloister.ledger/test-chain"`)

	// A state file for one ledger does not accept another ledger.
	path := statePath(t)
	tl.set(func(tl *testLedger) { tl.origin = "" })
	mustVerify(t, tl.client(), path, nil)
	other := newTestLedger(t)
	other.set(func(o *testLedger) {
		o.chainID = "other-chain"
		o.vals = []*testValidator{newTestValidator(t, "other-chain", 1)}
	})
	verifyFails(t, other.client(), path, nil, verify.ErrOrigin, `server is ledger "cloister.ledger/other-chain", but state file`)
}

func TestVerifyValidatorSetSwapped(t *testing.T) {
	t.Parallel()
	tl := newTestLedger(t)
	tl.addEntries(3, "a")
	c := tl.client()
	path := statePath(t)
	mustVerify(t, c, path, nil)

	// A whole new set, which signs a perfectly valid checkpoint of its own.
	pinned := tl.vals
	tl.set(func(tl *testLedger) {
		tl.vals = nil
		for range 4 {
			tl.vals = append(tl.vals, newTestValidator(t, tl.chainID, 10))
		}
	})
	verifyFails(t, c, path, nil, verify.ErrValidatorSetChanged, "differs from the one pinned in "+path, "new "+tl.vals[0].v.Name, "missing "+pinned[0].v.Name)

	// One validator's power changed.
	tl.set(func(tl *testLedger) {
		tl.vals = append([]*testValidator(nil), pinned...)
		v := *tl.vals[2]
		v.v.Power = 1000
		tl.vals[2] = &v
	})
	verifyFails(t, c, path, nil, verify.ErrValidatorSetChanged, pinned[2].v.Name+" power 1000 instead of 10")

	tl.set(func(tl *testLedger) { tl.vals = pinned })
	mustVerify(t, c, path, nil)
}

func TestStateFileChecks(t *testing.T) {
	t.Parallel()
	tl := newTestLedger(t, 1, 1)
	tl.addEntries(1, "a")
	c := tl.client()
	path := statePath(t)
	mustVerify(t, c, path, nil)
	good, _ := os.ReadFile(path)

	var st map[string]any
	json.Unmarshal(good, &st)
	st["checkpoint"] = strings.Replace(st["checkpoint"].(string), "\n1\n", "\n2\n", 1) // size changed: signatures break
	bad, _ := json.Marshal(st)
	for name, content := range map[string][]byte{
		"not json":        []byte("{"),
		"unknown version": bytes.Replace(good, []byte(`"version": 1`), []byte(`"version": 7`), 1),
		"edited size":     bad,
	} {
		os.WriteFile(path, content, 0o600)
		_, err := c.Verify(context.Background(), path, nil)
		var se *StateError
		if !errors.As(err, &se) || se.Path != path {
			t.Errorf("%s: error %v, want a *StateError for %s", name, err, path)
		}
	}
}

func TestDefaultStatePath(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("HOME", dir)
	tl := newTestLedger(t, 1)
	tl.addEntries(1, "a")
	res := mustVerify(t, tl.client(), "", nil)
	want, _ := DefaultStatePath("cloister.ledger/test-chain")
	if res.StatePath != want || !strings.HasPrefix(want, dir) || !strings.HasPrefix(filepath.Base(want), "ledger-") {
		t.Fatalf("state path %s, want %s under %s", res.StatePath, want, dir)
	}
	if _, err := os.Stat(want); err != nil {
		t.Fatal(err)
	}
	other, _ := DefaultStatePath("cloister.ledger/other")
	if other == want {
		t.Fatal("two origins share a default state path")
	}
}
