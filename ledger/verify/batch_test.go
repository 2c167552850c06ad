package verify

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

func signedBatch(t *testing.T, n int) []*SignedEntry {
	t.Helper()
	items := make([]BatchItem, n)
	for i := range items {
		items[i] = BatchItem{Kind: "note", Body: map[string]any{"seq": i, "text": strings.Repeat("x", i%7)}, Nonce: uint64(i), Time: vectorTime}
	}
	ses, err := SignBatch(seedKey(4), items)
	if err != nil {
		t.Fatal(err)
	}
	return ses
}

// TestBatchMembersStandAlone: every member of batches of every shape
// decodes (by the fixed-layout reader too) to what was signed, verifies
// alone, and carries the audit path the log's own Merkle code
// (x/mod/sumdb/tlog) checks against the batch's root.
func TestBatchMembersStandAlone(t *testing.T) {
	t.Parallel()
	for _, n := range []int{2, 3, 4, 5, 7, 8, 9, 17, 64, MaxBatch} {
		ses := signedBatch(t, n)
		leaves := make([][32]byte, n)
		for i, se := range ses {
			leaves[i] = BatchLeaf(&se.Entry)
		}
		root := treeRoot(leaves)
		for i, se := range ses {
			tx := se.Encode()
			if got := decodeLayout(tx); got == nil || !reflect.DeepEqual(got, se) {
				t.Fatalf("batch of %d, member %d: the layout reader gave %+v", n, i, got)
			}
			back, err := DecodeEntry(tx)
			if err != nil {
				t.Fatalf("batch of %d, member %d: %v", n, i, err)
			}
			if err := back.VerifySignature(); err != nil {
				t.Fatalf("batch of %d, member %d: %v", n, i, err)
			}
			if r, err := back.Batch.Root(leaves[i]); err != nil || r != root {
				t.Fatalf("batch of %d, member %d: root %x, %v; want %x", n, i, r, err, root)
			}
			proof := make(tlog.RecordProof, len(back.Batch.Path))
			for j, h := range back.Batch.Path {
				proof[j] = h
			}
			if err := tlog.CheckRecord(proof, int64(n), root, int64(i), leaves[i]); err != nil {
				t.Fatalf("batch of %d, member %d: tlog refuses the audit path: %v", n, i, err)
			}
		}
	}
}

// TestBatchForgeries: what an attacker can do with a batch's signature
// fails for the reason it should, also after the batch's signature was
// verified once (the remembered signature is no shortcut for a member
// that is not in the signed tree).
func TestBatchForgeries(t *testing.T) {
	t.Parallel()
	ses := signedBatch(t, 5)
	if err := ses[0].VerifySignature(); err != nil {
		t.Fatal(err)
	}
	forge := func(name string, f func(se *SignedEntry), want error) {
		t.Helper()
		se, err := DecodeEntry(ses[3].Encode())
		if err != nil {
			t.Fatal(err)
		}
		f(se)
		if err := se.VerifySignature(); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
	forge("another body under the batch's signature", func(se *SignedEntry) { se.Entry.Body = []byte(`{"seq":99}`) }, ErrBadSignature)
	forge("another nonce", func(se *SignedEntry) { se.Entry.Nonce++ }, ErrBadSignature)
	forge("another submitter claimed", func(se *SignedEntry) { se.Entry.Submitter = formatKey(seedKey(5)) }, ErrBadSignature)
	forge("another member's place", func(se *SignedEntry) { se.Batch.Index = 2 }, ErrBadSignature)
	forge("the batch said to be larger", func(se *SignedEntry) { se.Batch.Count = 6 }, ErrBadSignature)
	forge("a path one hash short", func(se *SignedEntry) { se.Batch.Path = se.Batch.Path[1:] }, ErrMalformedEntry)
	forge("the signature of a lone entry", func(se *SignedEntry) {
		lone, err := NewEntryWithNonce(seedKey(4), "note", map[string]any{"seq": 3}, 3, vectorTime)
		if err != nil {
			t.Fatal(err)
		}
		se.Signature = lone.Signature
	}, ErrBadSignature)
	// And the other way: a member's signature taken for the entry alone.
	lone := *ses[3]
	lone.Batch = nil
	if err := lone.VerifySignature(); !errors.Is(err, ErrBadSignature) {
		t.Errorf("a member's entry with the batch's signature, alone: %v", err)
	}
}

// TestSignBatchBounds: one item is an entry alone (its one form), more
// than MaxBatch are refused, a bad item names itself.
func TestSignBatchBounds(t *testing.T) {
	t.Parallel()
	one, err := SignBatch(seedKey(4), []BatchItem{{Kind: "note", Body: map[string]any{}, Nonce: 1, Time: vectorTime}})
	if err != nil || len(one) != 1 || one[0].Batch != nil {
		t.Fatalf("one item: %+v, %v; want an entry signed alone", one, err)
	}
	if _, err := SignBatch(seedKey(4), make([]BatchItem, MaxBatch+1)); err == nil || !strings.Contains(err.Error(), "at most 256") {
		t.Errorf("257 items: %v", err)
	}
	if _, err := SignBatch(seedKey(4), nil); err == nil {
		t.Error("no items signed")
	}
	items := []BatchItem{{Kind: "note", Body: map[string]any{}, Time: vectorTime}, {Kind: "", Body: map[string]any{}, Time: vectorTime}}
	if _, err := SignBatch(seedKey(4), items); err == nil || !strings.Contains(err.Error(), "entry 1") {
		t.Errorf("an empty kind in item 1: %v", err)
	}
}

func TestBatchPathLen(t *testing.T) {
	t.Parallel()
	for n := 2; n <= 40; n++ {
		leaves := make([][32]byte, n)
		for i := range leaves {
			leaves[i][0] = byte(i)
		}
		_, paths := treePaths(leaves)
		for i := range n {
			if got, want := batchPathLen(i, n), len(paths[i]); got != want {
				t.Fatalf("leaf %d of %d: batchPathLen %d, path %d", i, n, got, want)
			}
		}
	}
}

// treeRoot is the RFC 6962 Merkle tree hash of leaves (at least one),
// written apart from treePaths to check it.
func treeRoot(leaves [][32]byte) [32]byte {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return tlog.NodeHash(treeRoot(leaves[:k]), treeRoot(leaves[k:]))
}
