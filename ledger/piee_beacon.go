package ledger

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/challenge"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Rule version 10: the PIEE beacon from the validators' VRF shares
// (decision 0137, docs/piee.md "Randomness").
//
//   - piee.epoch opens epochs whose draw follows from a VRF beacon
//     (EpochRecord.Beacon = "vrf"), no longer from a checkpoint note, and
//     at most one per challenge.EpochSpacing of block time, whoever opens
//     them (decision 0138).
//   - While the latest such epoch has no beacon, every validator's vote
//     extension carries, after its checkpoint signature, its VRF proof of
//     the epoch's input challenge.Alpha (chain id, epoch number, the
//     epoch entry's leaf hash). VerifyVoteExtension refuses a vote whose
//     proof does not verify; a vote without one (a validator withholding
//     its share) is accepted.
//   - The next proposer that holds shares of validators with more than
//     2/3 of the power puts them, signed with its consensus key, in a
//     piee.beacon entry; the rule checks every share against the
//     validator set and the quorum, and records the beacon:
//     challenge.CombineShares, the hash of the outputs in key order.
//
// State:
//
//	piee_beacons  be64(epoch) -> vrfBeaconRecord
var bucketPieeBeacons = []byte("piee_beacons")

// KindPieeBeacon carries an epoch's VRF shares (rule version 10).
const KindPieeBeacon verify.Kind = challenge.KindBeacon

type vrfBeaconRecord struct {
	Index  uint64 `json:"index"`
	Beacon string `json:"beacon"` // hex
}

func (r *vrfBeaconRecord) value() [32]byte {
	var b [32]byte
	hex.Decode(b[:], []byte(r.Beacon))
	return b
}

// vrfBeacon reads epoch n's VRF beacon.
func vrfBeacon(v blockView, n uint64) ([32]byte, bool) {
	rec, ok := getRecord[vrfBeaconRecord](v, bucketPieeBeacons, be64(n))
	if !ok {
		return [32]byte{}, false
	}
	return rec.value(), true
}

func rulePieeEpochV10(c *ruleCtx) ([]write, *verify.RejectedError) {
	return pieeEpoch(c, challenge.BeaconVRF, challenge.EpochSpacing)
}

// epochAlpha is the VRF input of epoch ep.
func epochAlpha(v blockView, ep *EpochRecord) ([]byte, bool) {
	tx, ok := v.entryTx(ep.Index)
	if !ok || len(tx) == 0 {
		return nil, false
	}
	return challenge.Alpha(string(v.get(bucketMeta, metaChainID)), ep.Number, verify.LeafHash(tx)), true
}

// voters is the chain's current validators as the VRF shares count them.
func voters(v blockView) ([]challenge.Voter, error) {
	vals, err := readValidators(v)
	if err != nil {
		return nil, err
	}
	out := make([]challenge.Voter, len(vals))
	for i, sv := range vals {
		out[i] = challenge.Voter{Key: sv.PubKey, Power: sv.Power}
	}
	return out, nil
}

func rulePieeBeacon(c *ruleCtx) ([]write, *verify.RejectedError) {
	b, err := challenge.DecodeBeacon(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	if rej := c.requireValidator(); rej != nil {
		return nil, rej
	}
	ep, ok := getRecord[EpochRecord](c.v, bucketPieeEpochs, be64(b.Epoch))
	if !ok {
		return nil, reject(verify.CodeMissingReference, "piee.beacon: no epoch %d", b.Epoch)
	}
	if ep.Beacon != challenge.BeaconVRF {
		return nil, reject(verify.CodeMalformed, "piee.beacon: epoch %d draws from its checkpoint note (opened under rule version 9), not from VRF shares", b.Epoch)
	}
	if c.v.get(bucketPieeBeacons, be64(b.Epoch)) != nil {
		return nil, reject(verify.CodeReplay, "piee.beacon: epoch %d's beacon is on the ledger already", b.Epoch)
	}
	alpha, ok := epochAlpha(c.v, ep)
	if !ok {
		return nil, reject(verify.CodeUnavailable, "piee.beacon: epoch %d's entry %d is not readable", b.Epoch, ep.Index)
	}
	vs, err := voters(c.v)
	if err != nil {
		return nil, reject(verify.CodeUnavailable, "piee.beacon: %v", err)
	}
	beacon, err := challenge.CombineShares(b, alpha, vs)
	if err != nil {
		return nil, refuse(verify.CodeBadSignature, c.body.kind, err)
	}
	return []write{putRecord(bucketPieeBeacons, be64(b.Epoch), vrfBeaconRecord{Index: c.index, Beacon: hex.EncodeToString(beacon[:])})}, nil
}

// pendingVRF returns the VRF input of the latest epoch if, at height h,
// the rules draw it from VRF shares and its beacon is not on the ledger
// yet: what the validators' vote extensions prove.
func (a *app) pendingVRF(h int64) (uint64, []byte, bool) {
	rs, err := a.schedule().rulesAt(h)
	if err != nil || rs.kinds[KindPieeBeacon] == nil {
		return 0, nil, false
	}
	var (
		n     uint64
		alpha []byte
		ok    bool
	)
	a.store.view(func(r reader) error {
		v := blockView{r: r}
		ep, found := latestEpoch(v)
		if !found || ep.Beacon != challenge.BeaconVRF || v.get(bucketPieeBeacons, be64(ep.Number)) != nil {
			return nil
		}
		n = ep.Number
		alpha, ok = epochAlpha(v, ep)
		return nil
	})
	return n, alpha, ok
}

// extend is the vote extension key signs at the next height: its
// signature of the committed checkpoint and, while an epoch waits for
// its beacon, its VRF share of the epoch's input.
func (a *app) extend(key ed25519.PrivateKey) []byte {
	st, _ := a.state()
	ext := ed25519.Sign(key, []byte(a.checkpointOf(st.Size, st.Root).Text()))
	if _, alpha, ok := a.pendingVRF(st.Height + 1); ok && !a.withholdVRF.Load() {
		share := challenge.Prove(key, alpha)
		if a.forgeVRF.Load() {
			share[40] ^= 1 // inside the proof's challenge
		}
		ext = append(ext, share...)
	}
	return ext
}

// checkExtension checks a vote extension by the validator with key pub
// at the next height: the checkpoint signature, then the VRF share if it
// carries one. A share is optional (withholding is a validator's right,
// and its only bias); a wrong one makes the vote count for nothing.
func (a *app) checkExtension(pub ed25519.PublicKey, ext []byte) error {
	st, _ := a.state()
	if len(ext) < ed25519.SignatureSize || !verify.Signature(pub, []byte(a.checkpointOf(st.Size, st.Root).Text()), ext[:ed25519.SignatureSize]) {
		return fmt.Errorf("no valid checkpoint signature of size %d", st.Size)
	}
	share := ext[ed25519.SignatureSize:]
	if len(share) == 0 {
		return nil
	}
	n, alpha, ok := a.pendingVRF(st.Height + 1)
	if !ok {
		return fmt.Errorf("a %d-byte VRF share while no epoch waits for its beacon", len(share))
	}
	if _, err := challenge.VerifyShare(pub, alpha, share); err != nil {
		return fmt.Errorf("epoch %d: %w", n, err)
	}
	return nil
}

// beaconTx is the piee.beacon entry the proposer of a block at time at
// puts in it from the VRF shares of the last commit's votes (by
// validator address), or nil: no epoch waits, this node is no validator,
// or the valid shares fall short of a quorum.
func (a *app) beaconTx(vs *validatorSet, shares map[string][]byte, at time.Time) []byte {
	if a.privKey == nil || len(shares) == 0 {
		return nil
	}
	st, _ := a.state()
	n, alpha, ok := a.pendingVRF(st.Height + 1)
	if !ok {
		return nil
	}
	proofs := map[string][]byte{}
	for addr, p := range shares {
		if m := vs.byAddress([]byte(addr)); m != nil {
			if _, err := challenge.VerifyShare(m.pub, alpha, p); err == nil {
				proofs[protocol.FormatEd25519Key(m.pub)] = p
			}
		}
	}
	body := challenge.SharesFrom(n, proofs)
	var err error
	a.store.view(func(r reader) error {
		var vals []challenge.Voter
		if vals, err = voters(blockView{r: r}); err == nil {
			_, err = challenge.CombineShares(body, alpha, vals)
		}
		return nil
	})
	if err != nil {
		a.logger.Info("ledger: no piee.beacon in this proposal", "epoch", n, "reason", err)
		return nil
	}
	var nb [8]byte
	rand.Read(nb[:])
	se, err := verify.NewEntryWithNonce(a.privKey, KindPieeBeacon, body, binary.BigEndian.Uint64(nb[:])&verify.MaxNonce, at)
	if err != nil {
		a.logger.Error("ledger: piee.beacon entry", "epoch", n, "err", err)
		return nil
	}
	return se.Encode()
}

// splitExtension separates a vote extension into the checkpoint signature
// and the VRF share (nil if none).
func splitExtension(ext []byte) (sig, share []byte, ok bool) {
	switch len(ext) {
	case ed25519.SignatureSize:
		return ext, nil, true
	case ed25519.SignatureSize + challenge.ShareSize:
		return ext[:ed25519.SignatureSize], ext[ed25519.SignatureSize:], true
	}
	return nil, nil, false
}
