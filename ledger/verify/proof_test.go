package verify

import (
	"errors"
	"fmt"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// memoryLog is an RFC 6962 log held in memory, in tlog's stored-hash
// layout, to make real proofs from.
type memoryLog struct{ hashes []tlog.Hash }

func (m *memoryLog) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		out[i] = m.hashes[x]
	}
	return out, nil
}

func (m *memoryLog) append(t *testing.T, n int64, data []byte) {
	hs, err := tlog.StoredHashes(n, data, m)
	if err != nil {
		t.Fatal(err)
	}
	m.hashes = append(m.hashes, hs...)
}

func buildLog(t *testing.T, n int) (*memoryLog, [][]byte) {
	m := &memoryLog{}
	var txs [][]byte
	for i := range n {
		tx := fmt.Appendf(nil, `{"entry":%d}`, i)
		m.append(t, int64(i), tx)
		txs = append(txs, tx)
	}
	return m, txs
}

func (m *memoryLog) checkpoint(t *testing.T, size uint64) *Checkpoint {
	root, err := tlog.TreeHash(int64(size), m)
	if err != nil {
		t.Fatal(err)
	}
	return &Checkpoint{Origin: "o", Size: size, Root: root}
}

func TestCheckInclusion(t *testing.T) {
	t.Parallel()
	m, txs := buildLog(t, 13)
	cp := m.checkpoint(t, 13)
	for i := range uint64(13) {
		rp, err := tlog.ProveRecord(13, int64(i), m)
		if err != nil {
			t.Fatal(err)
		}
		p := &InclusionProof{Index: i, Size: 13, LeafHash: LeafHash(txs[i])}
		for _, h := range rp {
			p.Hashes = append(p.Hashes, h)
		}
		if tlog.RecordHash(txs[i]) != LeafHash(txs[i]) {
			t.Fatal("LeafHash is not tlog's record hash")
		}
		if err := CheckInclusion(p, cp, i, LeafHash(txs[i])); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		// Another entry's bytes, a bent path, another index: refused.
		if err := CheckInclusion(p, cp, i, LeafHash([]byte("forged"))); !errors.Is(err, ErrNotIncluded) {
			t.Errorf("entry %d with forged bytes: %v", i, err)
		}
		if len(p.Hashes) > 0 {
			bent := *p
			bent.Hashes = append([][32]byte(nil), p.Hashes...)
			bent.Hashes[0][0] ^= 1
			if err := CheckInclusion(&bent, cp, i, LeafHash(txs[i])); !errors.Is(err, ErrNotIncluded) {
				t.Errorf("entry %d with a bent path: %v", i, err)
			}
		}
	}
	if err := CheckInclusion(&InclusionProof{Index: 13, Size: 13}, cp, 13, [32]byte{}); !errors.Is(err, ErrNotIncluded) {
		t.Errorf("index beyond the checkpoint: %v", err)
	}
}

func TestCheckConsistency(t *testing.T) {
	t.Parallel()
	m, _ := buildLog(t, 21)
	newer := m.checkpoint(t, 21)
	for old := uint64(1); old < 21; old++ {
		tp, err := tlog.ProveTree(21, int64(old), m)
		if err != nil {
			t.Fatal(err)
		}
		p := &ConsistencyProof{From: old, To: 21}
		for _, h := range tp {
			p.Hashes = append(p.Hashes, h)
		}
		older := m.checkpoint(t, old)
		if err := CheckConsistency(p, older, newer); err != nil {
			t.Fatalf("%d to 21: %v", old, err)
		}
		forked := *older
		forked.Root[0] ^= 1
		if err := CheckConsistency(p, &forked, newer); !errors.Is(err, ErrInconsistent) {
			t.Errorf("%d to 21 from a forked root: %v", old, err)
		}
		if err := CheckConsistency(p, newer, older); !errors.Is(err, ErrRewound) {
			t.Errorf("21 back to %d: %v", old, err)
		}
	}
	same := *newer
	same.Root[31] ^= 1
	if err := CheckConsistency(nil, newer, &same); !errors.Is(err, ErrInconsistent) {
		t.Errorf("two roots at one size: %v", err)
	}
	if err := CheckConsistency(nil, &Checkpoint{Root: EmptyRoot}, newer); err != nil {
		t.Errorf("from the empty log: %v", err)
	}
	if err := CheckConsistency(nil, m.checkpoint(t, 3), newer); !errors.Is(err, ErrInconsistent) {
		t.Errorf("no proof: %v", err)
	}
}
