package ledger

import (
	"crypto/ed25519"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/ledger/challenge"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// newVRFWorld is the PIEE world on a rule-version-10 chain of four
// validators of equal power, the first of which proposes every block.
func newVRFWorld(t *testing.T) *pieeWorld {
	keys := []ed25519.PrivateKey{seedKey(0x51), seedKey(0x52), seedKey(0x53), seedKey(0x54)}
	c, err := newABCIChain(t, "vrf-test", []byte(`{"rules_version":`+strconv.Itoa(RulesV10)+`}`), keys, time.Now().UTC().Truncate(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	c.withhold = map[string]bool{}
	w := newPieeWorldOn(&aclChain{abciChain: c, t: t})
	w.c.want([][]byte{w.c.entry(w.org, KindPieeOperator, testOperator("matmul"))}, "ok")
	return w
}

// beaconRecord reads epoch n's VRF beacon and the shares entry's body.
func (w *pieeWorld) beaconRecord(n uint64) (*vrfBeaconRecord, *challenge.BeaconShares, []byte) {
	var rec *vrfBeaconRecord
	var body *challenge.BeaconShares
	var alpha []byte
	w.c.a.store.view(func(r reader) error {
		v := blockView{r: r}
		var ok bool
		if rec, ok = getRecord[vrfBeaconRecord](v, bucketPieeBeacons, be64(n)); !ok {
			return nil
		}
		_, tx, _ := r.entry(rec.Index)
		se, _ := verify.DecodeEntry(tx)
		body, _ = challenge.DecodeBeacon(se.Entry.Body)
		ep, _ := getRecord[EpochRecord](v, bucketPieeEpochs, be64(n))
		alpha, _ = epochAlpha(v, ep)
		return nil
	})
	return rec, body, alpha
}

// TestPieeVRFBeacon: an epoch of rule version 10 draws from the
// validators' VRF shares, carried in vote extensions and put on the ledger
// by the proposer; a validator withholding its share does not stop the
// round, and the beacon is still checked by anyone from the shares; a
// forged share is refused, in a vote extension and in an entry.
func TestPieeVRFBeacon(t *testing.T) {
	t.Parallel()
	w := newVRFWorld(t)
	c := w.c
	withheld := c.keys[3]
	c.withhold[string(withheld)] = true
	c.want([][]byte{c.entry(w.org, KindPieeEpoch, challenge.Epoch{CommitSeconds: 30, RevealSeconds: 30})}, "ok")
	commit := c.entry(w.nodes[w.keys[0]], KindPieeCommit, challenge.Commit{Epoch: 1, Node: w.keys[0], Commitment: strings.Repeat("00", 32)})
	c.want([][]byte{commit}, "unavailable: VRF shares")

	// The votes of the block after the epoch carry shares; the block
	// after them carries the proposer's piee.beacon entry.
	n, alpha, ok := c.a.pendingVRF(c.height + 1)
	if !ok || n != 1 {
		t.Fatalf("pending VRF: %d %v", n, ok)
	}
	for i, k := range c.keys {
		ext := c.a.extend(k)
		if len(ext) != ed25519.SignatureSize+challenge.ShareSize {
			t.Fatalf("extension of %d bytes, want a signature and a share", len(ext))
		}
		// A forged share: refused with the reason.
		bad := append([]byte(nil), ext...)
		bad[ed25519.SignatureSize+40] ^= 0x01
		if err := c.a.checkExtension(k.Public().(ed25519.PublicKey), bad); err == nil || !strings.Contains(err.Error(), "epoch 1: vrf share") {
			t.Fatalf("forged share: %v", err)
		}
		// Another validator's share under this validator's vote: refused.
		other := append(append([]byte(nil), ext[:ed25519.SignatureSize]...), challenge.Prove(c.keys[(i+1)%len(c.keys)], alpha)...)
		if err := c.a.checkExtension(k.Public().(ed25519.PublicKey), other); err == nil {
			t.Fatal("a share under another validator's vote accepted")
		}
		// A share of another input (a grinding attempt): refused.
		ground := append(append([]byte(nil), ext[:ed25519.SignatureSize]...), challenge.Prove(k, append(alpha, 0))...)
		if err := c.a.checkExtension(k.Public().(ed25519.PublicKey), ground); err == nil {
			t.Fatal("a share of another input accepted")
		}
	}
	// The extensions of the block after the epoch's (the one that took
	// the refused commit) carry the shares; this block takes the
	// proposer's piee.beacon entry.
	fb := c.block()
	if len(fb.TxResults) != 2 || fb.TxResults[1].Code != 0 {
		t.Fatalf("height %d: want the checkpoint and an accepted piee.beacon, got %d results", c.height, len(fb.TxResults))
	}
	rec, body, alpha := w.beaconRecord(1)
	if rec == nil {
		t.Fatal("no beacon recorded")
	}
	if len(body.Shares) != 3 {
		t.Fatalf("%d shares, want 3 (one validator withheld)", len(body.Shares))
	}
	for _, s := range body.Shares {
		if s.Validator == pubText(withheld) {
			t.Fatal("the withheld share is on the ledger")
		}
	}
	// Anyone recomputes the beacon from the shares and the validator set.
	var vs []challenge.Voter
	for _, k := range c.keys {
		vs = append(vs, challenge.Voter{Key: k.Public().(ed25519.PublicKey), Power: 1})
	}
	b, err := challenge.CombineShares(body, alpha, vs)
	if err != nil || hex.EncodeToString(b[:]) != rec.Beacon {
		t.Fatalf("recomputed beacon %x (%v), recorded %s", b, err, rec.Beacon)
	}
	// With the beacon on the ledger the epoch is drawn and commits go in.
	var draw []challenge.Challenge
	c.a.store.view(func(r reader) error {
		ep, _ := getRecord[EpochRecord](blockView{r: r}, bucketPieeEpochs, be64(1))
		draw = challenge.Draw(b, 1, ep.Participants, ep.Operators, ep.K)
		return nil
	})
	ch, _ := challenge.Find(draw, w.keys[0])
	cm := challenge.Commitment(w.nodes[w.keys[0]].Public().(ed25519.PublicKey), ch.ID, challenge.ResultDigest(run("ab")))
	c.want([][]byte{c.entry(w.nodes[w.keys[0]], KindPieeCommit, challenge.Commit{Epoch: 1, Node: w.keys[0], Commitment: cm})}, "ok")
	// The epoch no longer waits: extensions carry no share, and one that
	// does is refused.
	if _, _, ok := c.a.pendingVRF(c.height + 1); ok {
		t.Fatal("epoch 1 still pending after its beacon")
	}
	if ext := c.a.extend(c.keys[0]); len(ext) != ed25519.SignatureSize {
		t.Fatalf("extension of %d bytes with no epoch pending", len(ext))
	}
	late := append(c.a.extend(c.keys[1]), challenge.Prove(c.keys[1], alpha)...)
	if err := c.a.checkExtension(c.keys[1].Public().(ed25519.PublicKey), late); err == nil || !strings.Contains(err.Error(), "no epoch waits") {
		t.Fatalf("share with no epoch pending: %v", err)
	}

	// piee.beacon entries: a replay, a non-validator, too few shares, a
	// forged share.
	all := map[string][]byte{}
	for _, k := range c.keys {
		all[pubText(k)] = challenge.Prove(k, alpha)
	}
	c.want([][]byte{c.entry(c.keys[1], KindPieeBeacon, challenge.SharesFrom(1, all))}, "replay: on the ledger already")
	c.want([][]byte{c.entry(w.org, KindPieeBeacon, challenge.SharesFrom(1, all))}, "unauthorized: validator")
}

// TestPieeVRFBeaconRefusals: what a piee.beacon entry must hold, judged
// before any proposer has put one on the ledger.
func TestPieeVRFBeaconRefusals(t *testing.T) {
	t.Parallel()
	w := newVRFWorld(t)
	c := w.c
	c.withhold[string(c.keys[0])], c.withhold[string(c.keys[1])] = true, true // no quorum of shares in votes
	c.want([][]byte{c.entry(w.org, KindPieeEpoch, challenge.Epoch{CommitSeconds: 30, RevealSeconds: 30})}, "ok")
	_, alpha, ok := c.a.pendingVRF(c.height + 1)
	if !ok {
		t.Fatal("no epoch pending")
	}
	c.block()
	if fb := c.block(); len(fb.TxResults) != 1 {
		t.Fatalf("a beacon entry from shares of half the power: %+v", fb.TxResults)
	}
	shares := func(keys ...ed25519.PrivateKey) map[string][]byte {
		m := map[string][]byte{}
		for _, k := range keys {
			m[pubText(k)] = challenge.Prove(k, alpha)
		}
		return m
	}
	forged := shares(c.keys...)
	forged[pubText(c.keys[2])] = challenge.Prove(c.keys[2], append(alpha, 1))
	c.want([][]byte{
		c.entry(c.keys[1], KindPieeBeacon, challenge.SharesFrom(1, shares(c.keys[0], c.keys[1]))),
		c.entry(c.keys[1], KindPieeBeacon, challenge.SharesFrom(1, forged)),
		c.entry(c.keys[1], KindPieeBeacon, challenge.SharesFrom(2, shares(c.keys...))),
		c.entry(c.keys[1], KindPieeBeacon, challenge.SharesFrom(1, shares(c.keys[1], c.keys[2], c.keys[3]))),
	}, "bad_signature: need more than 2/3", "bad_signature: does not verify", "missing_reference: no epoch 2", "ok")
}

// TestPieeEpochSpacing: from rule version 10 the ledger opens at most one
// epoch per challenge.EpochSpacing of block time, whoever asks — the
// previous epoch's reveals having closed is no longer enough.
func TestPieeEpochSpacing(t *testing.T) {
	t.Parallel()
	w := newVRFWorld(t)
	c := w.c
	c.want([][]byte{c.entry(w.org, KindPieeEpoch, challenge.Epoch{CommitSeconds: 10, RevealSeconds: 10})}, "ok")
	// Past epoch 1's reveal deadline, well inside the spacing: refused,
	// to a member and to a node alike.
	c.t0 = c.t0.Add(2 * time.Minute)
	c.want([][]byte{
		c.entry(w.org, KindPieeEpoch, challenge.Epoch{CommitSeconds: 10, RevealSeconds: 10}),
		c.entry(w.nodes[w.keys[0]], KindPieeEpoch, challenge.Epoch{CommitSeconds: 10, RevealSeconds: 10}),
	}, "replay: at most one epoch per 10m0s", "replay: at most one epoch per 10m0s")
	// After the spacing (offers renewed, as live nodes do): accepted.
	c.t0 = c.t0.Add(challenge.EpochSpacing * time.Second)
	var offers [][]byte
	for _, k := range w.keys {
		offers = append(offers, c.entry(w.nodes[k], KindOffer, offerBody(600)))
	}
	c.want(offers, "ok", "ok", "ok", "ok")
	c.want([][]byte{c.entry(w.nodes[w.keys[0]], KindPieeEpoch, challenge.Epoch{CommitSeconds: 10, RevealSeconds: 10})}, "ok")
}
