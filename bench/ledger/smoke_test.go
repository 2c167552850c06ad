package ledgerbench

import (
	"context"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// TestFixtures runs the benchmarks' machinery once on a small embedded
// ledger (a few seconds): entries committed through Append and the batch
// endpoint, the in-memory tree agreeing with the cosigned checkpoint, and
// the three verifiers the proof benchmarks compare accepting the ledger's
// proofs and refusing a tampered one.
func TestFixtures(t *testing.T) {
	e := openEmbedded(t, t.TempDir())
	s := newSigners(t, 4)
	tree := &memTree{}
	first := s.sign(t, 20)
	res := commitAll(t, appendOne{[]ledger.Appender{e.l}}, first, 8)
	if err := tree.add(first, res.receipts); err != nil {
		t.Fatal(err)
	}
	second := s.sign(t, 30)
	res = commitAll(t, appendBatch{[]*client.Client{e.c}, 10}, second, 2)
	if err := tree.add(second, res.receipts); err != nil {
		t.Fatal(err)
	}
	const size = 50
	waitCheckpoint(t, e.c, size)
	ctx := context.Background()
	vs, err := e.c.Validators(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := e.c.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := verify.OpenCheckpoint(raw.Note, vs)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != size || cp.Root != tree.root(size) {
		t.Fatalf("checkpoint size %d root %x, want %d and %x", cp.Size, cp.Root, size, tree.root(size))
	}

	for _, idx := range []uint64{0, 17, 49} {
		p, err := e.c.InclusionProof(ctx, idx, size)
		if err != nil {
			t.Fatal(err)
		}
		tx := tree.leaves[idx]
		var tp tlog.RecordProof
		var mp [][]byte
		for _, h := range p.Hashes {
			tp = append(tp, h)
			mp = append(mp, h[:])
		}
		check := func(tampered bool) {
			t.Helper()
			errs := []error{
				verify.CheckInclusion(p, cp, idx, verify.LeafHash(tx)),
				tlog.CheckRecord(tp, size, cp.Root, int64(idx), tlog.RecordHash(tx)),
				proof.VerifyInclusion(rfc6962.DefaultHasher, idx, size, rfc6962.DefaultHasher.HashLeaf(tx), mp, cp.Root[:]),
			}
			for i, err := range errs {
				if tampered != (err != nil) {
					t.Errorf("entry %d, verifier %d, tampered=%v: err %v", idx, i, tampered, err)
				}
			}
		}
		check(false)
		p.Hashes[0][0] ^= 1
		tp[0][0] ^= 1
		mp[0][0] ^= 1
		check(true)
	}

	for _, from := range []uint64{1, 20, 33} {
		p, err := e.c.ConsistencyProof(ctx, from, size)
		if err != nil {
			t.Fatal(err)
		}
		older := &verify.Checkpoint{Origin: cp.Origin, Size: from, Root: tree.root(from)}
		var tp tlog.TreeProof
		var mp [][]byte
		for _, h := range p.Hashes {
			tp = append(tp, h)
			mp = append(mp, h[:])
		}
		errs := []error{
			verify.CheckConsistency(p, older, cp),
			tlog.CheckTree(tp, size, cp.Root, int64(from), older.Root),
			proof.VerifyConsistency(rfc6962.DefaultHasher, from, size, mp, older.Root[:], cp.Root[:]),
		}
		for i, err := range errs {
			if err != nil {
				t.Errorf("consistency %d→%d, verifier %d: %v", from, size, i, err)
			}
		}
	}

	if err := e.close(); err != nil {
		t.Fatal(err)
	}
	u := measureDisk(t, e.dir)
	if u.parts["app-bbolt"] == 0 || u.parts["comet-blockstore"] == 0 {
		t.Errorf("disk usage misses a component: %v", u)
	}
}
