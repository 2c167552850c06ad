package ledgerbench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// proofSizes are the log sizes proofs are measured at. The log is built
// once per process through the real ledger, in this order, with a
// cosigned checkpoint at each size.
var proofSizes = []uint64{1_000, 100_000}

// proofFixture is an embedded ledger holding exactly the entries this
// package appended, an independent in-memory copy of its Merkle tree, and
// the verified checkpoint at each size of proofSizes reached so far.
type proofFixture struct {
	e    *embedded
	s    *signers
	tree *memTree
	vs   *verify.ValidatorSet
	cps  map[uint64]*verify.Checkpoint
}

var (
	proofMu  sync.Mutex
	proofFix *proofFixture
)

// proofLog returns the shared proof ledger grown to at least size entries,
// with a verified checkpoint of exactly size.
func proofLog(b *testing.B, size uint64) *proofFixture {
	proofMu.Lock()
	defer proofMu.Unlock()
	if proofFix == nil {
		dir, err := os.MkdirTemp("", "ledgerbench-proofs-")
		if err != nil {
			b.Fatal(err)
		}
		f := &proofFixture{s: newSigners(b, 64), tree: &memTree{}, cps: map[uint64]*verify.Checkpoint{}}
		// Opened outside b's lifetime: it serves every -count run.
		f.e = openEmbedded(&keepOpen{B: b}, dir)
		onExit(func() error { err := f.e.close(); os.RemoveAll(dir); return err })
		if f.vs, err = f.e.c.Validators(context.Background()); err != nil {
			b.Fatal(err)
		}
		proofFix = f
	}
	f := proofFix
	for _, target := range proofSizes {
		if f.cps[size] != nil {
			break
		}
		if f.cps[target] != nil {
			continue
		}
		have := uint64(len(f.tree.leaves))
		b.Logf("growing the proof ledger from %d to %d entries", have, target)
		for have < target {
			n := min(target-have, 20_000)
			entries := f.s.sign(b, int(n))
			res := commitAll(b, appendOne{[]ledger.Appender{f.e.l}}, entries, 256)
			if err := f.tree.add(entries, res.receipts); err != nil {
				b.Fatal(err)
			}
			have += n
		}
		waitCheckpoint(b, f.e.c, target)
		raw, err := f.e.c.Checkpoint(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		cp, err := verify.OpenCheckpoint(raw.Note, f.vs)
		if err != nil {
			b.Fatal(err)
		}
		if cp.Size != target || cp.Root != f.tree.root(target) {
			b.Fatalf("checkpoint size %d root %x; want size %d and the root computed here, %x", cp.Size, cp.Root, target, f.tree.root(target))
		}
		f.cps[target] = cp
	}
	if f.cps[size] == nil {
		b.Fatalf("no proof log of size %d (sizes: %v)", size, proofSizes)
	}
	return f
}

// keepOpen is a testing.TB whose Cleanup never runs: for fixtures that
// outlive one benchmark (closed by TestMain instead).
type keepOpen struct{ *testing.B }

func (keepOpen) Cleanup(func()) {}

// indices returns n pseudo-random indices below size (fixed seed: every
// run asks for the same proofs).
func indices(n int, size uint64) []uint64 {
	r := rand.New(rand.NewPCG(1, size))
	out := make([]uint64, n)
	for i := range out {
		out[i] = r.Uint64N(size)
	}
	return out
}

func sizesToRun(b *testing.B) []uint64 {
	if testing.Short() {
		return proofSizes[:1]
	}
	return proofSizes
}

// BenchmarkInclusionProof: the server building an inclusion proof (the
// handler of GET /v1/proof/inclusion called in process, and the same
// request over loopback through ledger/client), and a client verifying one
// given the entry's bytes and a verified checkpoint: ledger/client's
// VerifyInclusion (leaf hash + tlog.CheckRecord), and beside it the same
// check written directly against x/mod/sumdb/tlog and against
// transparency-dev/merkle's proof package (the peers). Each iteration takes
// the next of 256 random indices.
func BenchmarkInclusionProof(b *testing.B) {
	for _, size := range sizesToRun(b) {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			f := proofLog(b, size)
			cp := f.cps[size]
			idx := indices(256, size)
			h := f.e.l.Handler()
			b.Run("server-handler", func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet,
						"/v1/proof/inclusion?index="+strconv.FormatUint(idx[i%len(idx)], 10)+"&size="+strconv.FormatUint(size, 10), nil))
					if rec.Code != http.StatusOK {
						b.Fatalf("status %d: %s", rec.Code, rec.Body)
					}
				}
			})
			b.Run("server-http", func(b *testing.B) {
				ctx := context.Background()
				for i := 0; b.Loop(); i++ {
					if _, err := f.e.c.InclusionProof(ctx, idx[i%len(idx)], size); err != nil {
						b.Fatal(err)
					}
				}
			})
			proofs := make([]*verify.InclusionProof, len(idx))
			var hashes int
			for i, x := range idx {
				p, err := f.e.c.InclusionProof(context.Background(), x, size)
				if err != nil {
					b.Fatal(err)
				}
				proofs[i] = p
				hashes += len(p.Hashes)
			}
			tlogProofs := make([]tlog.RecordProof, len(proofs))
			merkleProofs := make([][][]byte, len(proofs))
			for i, p := range proofs {
				for _, hh := range p.Hashes {
					tlogProofs[i] = append(tlogProofs[i], hh)
					merkleProofs[i] = append(merkleProofs[i], hh[:])
				}
			}
			tx := func(i int) []byte { return f.tree.leaves[idx[i%len(idx)]] }
			loop := func(b *testing.B, fn func(i int) error) {
				for i := 0; b.Loop(); i++ {
					if err := fn(i); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(hashes)/float64(len(idx)), "hashes/proof")
			}
			b.Run("verify-client", func(b *testing.B) {
				loop(b, func(i int) error {
					j := i % len(idx)
					return verify.CheckInclusion(proofs[j], cp, idx[j], verify.LeafHash(tx(i)))
				})
			})
			b.Run("verify-x-mod-tlog", func(b *testing.B) {
				loop(b, func(i int) error {
					j := i % len(idx)
					return tlog.CheckRecord(tlogProofs[j], int64(size), cp.Root, int64(idx[j]), tlog.RecordHash(tx(i)))
				})
			})
			b.Run("verify-transparency-dev-merkle", func(b *testing.B) {
				loop(b, func(i int) error {
					j := i % len(idx)
					return proof.VerifyInclusion(rfc6962.DefaultHasher, idx[j], size, rfc6962.DefaultHasher.HashLeaf(tx(i)), merkleProofs[j], cp.Root[:])
				})
			})
		})
	}
}

// BenchmarkConsistencyProof: as BenchmarkInclusionProof, for the proof that
// the log of a random earlier size m (1 <= m < size) is a prefix of the
// checkpointed log of size. Roots of the earlier sizes come from the
// in-memory copy of the tree, whose root at size equals the checkpoint's.
func BenchmarkConsistencyProof(b *testing.B) {
	for _, size := range sizesToRun(b) {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			f := proofLog(b, size)
			cp := f.cps[size]
			from := indices(256, size-1)
			for i := range from {
				from[i]++ // 1 <= m < size
			}
			olders := make([]*verify.Checkpoint, len(from))
			for i, m := range from {
				olders[i] = &verify.Checkpoint{Origin: cp.Origin, Size: m, Root: f.tree.root(m)}
			}
			h := f.e.l.Handler()
			b.Run("server-handler", func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet,
						"/v1/proof/consistency?from="+strconv.FormatUint(from[i%len(from)], 10)+"&to="+strconv.FormatUint(size, 10), nil))
					if rec.Code != http.StatusOK {
						b.Fatalf("status %d: %s", rec.Code, rec.Body)
					}
				}
			})
			b.Run("server-http", func(b *testing.B) {
				ctx := context.Background()
				for i := 0; b.Loop(); i++ {
					if _, err := f.e.c.ConsistencyProof(ctx, from[i%len(from)], size); err != nil {
						b.Fatal(err)
					}
				}
			})
			proofs := make([]*verify.ConsistencyProof, len(from))
			tlogProofs := make([]tlog.TreeProof, len(from))
			merkleProofs := make([][][]byte, len(from))
			var hashes int
			for i, m := range from {
				p, err := f.e.c.ConsistencyProof(context.Background(), m, size)
				if err != nil {
					b.Fatal(err)
				}
				proofs[i] = p
				hashes += len(p.Hashes)
				for _, hh := range p.Hashes {
					tlogProofs[i] = append(tlogProofs[i], hh)
					merkleProofs[i] = append(merkleProofs[i], hh[:])
				}
			}
			loop := func(b *testing.B, fn func(j int) error) {
				for i := 0; b.Loop(); i++ {
					if err := fn(i % len(from)); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(hashes)/float64(len(from)), "hashes/proof")
			}
			b.Run("verify-client", func(b *testing.B) {
				loop(b, func(j int) error { return verify.CheckConsistency(proofs[j], olders[j], cp) })
			})
			b.Run("verify-x-mod-tlog", func(b *testing.B) {
				loop(b, func(j int) error {
					return tlog.CheckTree(tlogProofs[j], int64(size), cp.Root, int64(from[j]), olders[j].Root)
				})
			})
			b.Run("verify-transparency-dev-merkle", func(b *testing.B) {
				loop(b, func(j int) error {
					return proof.VerifyConsistency(rfc6962.DefaultHasher, from[j], size, merkleProofs[j], olders[j].Root[:], cp.Root[:])
				})
			})
		})
	}
}

// cosigned is a real cosigned checkpoint and the validator set that signed
// it.
type cosigned struct {
	note []byte
	vs   *verify.ValidatorSet
}

var (
	cosignedMu sync.Mutex
	cosignedN  = map[int]cosigned{}
)

// cosignedCheckpoint returns a checkpoint cosigned by n validators: from
// the embedded ledger for 1, from a four-validator testnet (in process,
// stopped once the checkpoint is taken) otherwise.
func cosignedCheckpoint(b *testing.B, n int) cosigned {
	cosignedMu.Lock()
	defer cosignedMu.Unlock()
	if c, ok := cosignedN[n]; ok {
		return c
	}
	var cl *client.Client
	if n == 1 {
		e := openEmbedded(b, b.TempDir())
		defer e.close()
		cl = e.c
		s := newSigners(b, 1)
		commitAll(b, appendOne{[]ledger.Appender{e.l}}, s.sign(b, 10), 1)
		waitCheckpoint(b, cl, 10)
	} else {
		t := startTestnet(b, b.TempDir(), n, false)
		defer func() {
			if err := t.close(); err != nil {
				b.Log(err)
			}
		}()
		cl = t.clients[0]
		s := newSigners(b, 1)
		commitAll(b, appendOne{t.appenders()}, s.sign(b, 10), 1)
		waitCheckpoint(b, cl, 10)
	}
	ctx := context.Background()
	vs, err := cl.Validators(ctx)
	if err != nil {
		b.Fatal(err)
	}
	// A quorum of 4 is 3, and a block's checkpoint carries the vote
	// extensions of the precommits its proposer holds when it proposes:
	// with no commit timeout, often only the first three. Take a checkpoint signed
	// by all n if one comes within 10 s, else the most signed one seen.
	var raw *verify.Checkpoint
	best := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && best < n; {
		r, err := cl.Checkpoint(ctx)
		if err != nil {
			b.Fatal(err)
		}
		cp, err := verify.OpenCheckpoint(r.Note, vs)
		if err != nil {
			b.Fatal(err)
		}
		if len(cp.Signers) > best {
			raw, best = r, len(cp.Signers)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if best < n {
		b.Logf("no checkpoint signed by all %d validators within 10 s; measuring one signed by %d", n, best)
	}
	c := cosigned{note: raw.Note, vs: vs}
	cosignedN[n] = c
	return c
}

// BenchmarkCheckpointVerify: checking a real cosigned checkpoint note
// against a pinned validator set of 1 or 4 validators with
// verify.OpenCheckpoint (what the client, the state machine and the CLI
// all use: parse, build verifiers from the pinned keys, check every
// signature, count power), and, as the floor, x/mod/sumdb/note.Open with
// verifiers built beforehand (signature checks only).
func BenchmarkCheckpointVerify(b *testing.B) {
	for _, n := range []int{1, 4} {
		b.Run(fmt.Sprintf("validators=%d", n), func(b *testing.B) {
			if n > 1 && testing.Short() {
				b.Skip("starts a testnet; skipped under -short")
			}
			c := cosignedCheckpoint(b, n)
			var vl []note.Verifier
			for _, v := range c.vs.Validators {
				nv, err := note.NewVerifier(v.Key)
				if err != nil {
					b.Fatal(err)
				}
				vl = append(vl, nv)
			}
			verifiers := note.VerifierList(vl...)
			cp, err := verify.OpenCheckpoint(c.note, c.vs)
			if err != nil {
				b.Fatal(err)
			}
			sigs := float64(len(cp.Signers))
			b.Run("verify", func(b *testing.B) {
				for b.Loop() {
					if _, err := verify.OpenCheckpoint(c.note, c.vs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(sigs, "signatures")
			})
			b.Run("x-mod-note-open", func(b *testing.B) {
				for b.Loop() {
					if _, err := note.Open(c.note, verifiers); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(sigs, "signatures")
			})
		})
	}
}
