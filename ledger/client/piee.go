package client

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/challenge"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// PieeOperator is a published challenge operator (GET /v1/piee/operators).
type PieeOperator struct {
	challenge.Operator
	Index     uint64 `json:"index"`
	Publisher string `json:"publisher"`
}

// PieeOperators is the operator registry.
type PieeOperators struct {
	Height    int64          `json:"height"`
	Operators []PieeOperator `json:"operators"`
}

// PieeEpochRecord is an epoch as the ledger fixed it.
type PieeEpochRecord struct {
	Number       uint64   `json:"number"`
	Index        uint64   `json:"index"`
	Opener       string   `json:"opener"`
	CommitBy     int64    `json:"commit_by"`
	RevealBy     int64    `json:"reveal_by"`
	K            int      `json:"k"`
	Participants []string `json:"participants"`
	Classes      []string `json:"classes"`
	Operators    []string `json:"operators"`
	Beacon       string   `json:"beacon,omitempty"` // challenge.BeaconVRF: drawn from the validators' VRF shares
	Opened       int64    `json:"opened,omitempty"` // block time of the epoch entry (rule version 10 on)
}

// Class is participant node's isolate class in the epoch ("" if none).
func (e *PieeEpochRecord) Class(node string) string {
	for i, p := range e.Participants {
		if p == node && i < len(e.Classes) {
			return e.Classes[i]
		}
	}
	return ""
}

// PieeEpoch is an epoch with its beacon, its draw and its signed entries.
// PieeEpoch (the method) checks what can be checked here: every entry's
// signature and kind, the beacon note's cosignatures against the
// validator set, and the draw recomputed from the note.
type PieeEpoch struct {
	Height     int64                 `json:"height"`
	Epoch      PieeEpochRecord       `json:"epoch"`
	BeaconNote []byte                `json:"beacon_note,omitempty"`
	BeaconSize uint64                `json:"beacon_size,omitempty"`
	Draw       []challenge.Challenge `json:"draw,omitempty"`
	Raw        []json.RawMessage     `json:"entries"`
	Entries    []*verify.SignedEntry `json:"-"`
}

// PieeScore is one node's record.
type PieeScore struct {
	Node         string `json:"node"`
	Passed       uint64 `json:"passed"`
	Failed       uint64 `json:"failed"`
	Unavailable  uint64 `json:"unavailable"`
	Inconclusive uint64 `json:"inconclusive"`
	Verified     uint64 `json:"verified"`
	Disagreed    uint64 `json:"disagreed"`
	Missed       uint64 `json:"missed"`
}

// PieeScores is every scored node's record.
type PieeScores struct {
	Height int64       `json:"height"`
	Latest uint64      `json:"latest_epoch"`
	Scores []PieeScore `json:"scores"`
}

const maxPieeJSON = 16 << 20

// PieeOperators fetches the operator registry.
func (c *Client) PieeOperators(ctx context.Context) (*PieeOperators, error) {
	b, err := c.do(ctx, "GET", "/v1/piee/operators", nil, nil, maxPieeJSON, false)
	if err != nil {
		return nil, err
	}
	var out PieeOperators
	if err := decodeStrict(b, &out); err != nil {
		return nil, malformed("piee operators: %v", err)
	}
	return &out, nil
}

// PieeScores fetches every node's score.
func (c *Client) PieeScores(ctx context.Context) (*PieeScores, error) {
	b, err := c.do(ctx, "GET", "/v1/piee/scores", nil, nil, maxPieeJSON, false)
	if err != nil {
		return nil, err
	}
	var out PieeScores
	if err := decodeStrict(b, &out); err != nil {
		return nil, malformed("piee scores: %v", err)
	}
	return &out, nil
}

// PieeEpoch fetches epoch n (0: the latest; ErrNotFound if none) and
// checks it: entries signed and of the PIEE kinds, the beacon note
// cosigned by a quorum of vs (nil: the ledger's current validators), the
// draw the one challenge.Draw gives for that note.
func (c *Client) PieeEpoch(ctx context.Context, n uint64, vs *verify.ValidatorSet) (*PieeEpoch, error) {
	which := "latest"
	if n > 0 {
		which = strconv.FormatUint(n, 10)
	}
	b, err := c.do(ctx, "GET", "/v1/piee/epochs/"+which, nil, nil, maxPieeJSON, false)
	if err != nil {
		return nil, err
	}
	var out PieeEpoch
	if err := decodeStrict(b, &out); err != nil {
		return nil, malformed("piee epoch: %v", err)
	}
	if n > 0 && out.Epoch.Number != n {
		return nil, malformed("piee epoch: answer for epoch %d, asked for %d", out.Epoch.Number, n)
	}
	for i, raw := range out.Raw {
		se, err := verify.DecodeEntry(raw)
		if err != nil {
			return nil, malformed("piee epoch entry %d: %v", i, err)
		}
		if err := se.VerifySignature(); err != nil {
			return nil, malformed("piee epoch entry %d: %v", i, err)
		}
		switch se.Entry.Kind {
		case challenge.KindEpoch, challenge.KindCommit, challenge.KindReveal, challenge.KindVerdict, challenge.KindBeacon:
		default:
			return nil, malformed("piee epoch entry %d: a %s entry", i, se.Entry.Kind)
		}
		out.Entries = append(out.Entries, se)
	}
	if out.Epoch.Beacon == challenge.BeaconVRF {
		return &out, c.checkVRFDraw(ctx, &out, vs)
	}
	if out.BeaconNote == nil {
		if out.Draw != nil {
			return nil, malformed("piee epoch %d: a draw without its beacon", out.Epoch.Number)
		}
		return &out, nil
	}
	if vs == nil {
		if vs, err = c.Validators(ctx); err != nil {
			return nil, err
		}
	}
	cp, err := verify.OpenCheckpoint(out.BeaconNote, vs)
	if err != nil {
		return nil, malformed("piee epoch %d beacon: %v", out.Epoch.Number, err)
	}
	if cp.Size != out.BeaconSize || cp.Size <= out.Epoch.Index {
		return nil, malformed("piee epoch %d beacon: a checkpoint of size %d, not one after entry %d", out.Epoch.Number, cp.Size, out.Epoch.Index)
	}
	e := &out.Epoch
	draw := challenge.Draw(challenge.Beacon(out.BeaconNote), e.Number, e.Participants, e.Operators, e.K)
	if !reflect.DeepEqual(draw, out.Draw) {
		return nil, malformed("piee epoch %d: the served draw is not the one its beacon gives", e.Number)
	}
	return &out, nil
}

// checkVRFDraw checks the draw of an epoch drawn from VRF shares: the
// piee.beacon entry's shares each verified against vs (nil: the ledger's
// current validators) for the epoch's input, holding more than 2/3 of
// the power, and the draw the one challenge.Draw gives for their beacon.
func (c *Client) checkVRFDraw(ctx context.Context, ep *PieeEpoch, vs *verify.ValidatorSet) error {
	var opened, shares *verify.SignedEntry
	for _, se := range ep.Entries {
		switch se.Entry.Kind {
		case challenge.KindEpoch:
			opened = se
		case challenge.KindBeacon:
			shares = se
		}
	}
	n := ep.Epoch.Number
	if shares == nil {
		if ep.Draw != nil {
			return malformed("piee epoch %d: a draw without its piee.beacon entry", n)
		}
		return nil
	}
	if opened == nil {
		return malformed("piee epoch %d: the answer lacks the entry that opened it", n)
	}
	b, err := challenge.DecodeBeacon(shares.Entry.Body)
	if err != nil {
		return malformed("piee epoch %d: %v", n, err)
	}
	if b.Epoch != n {
		return malformed("piee epoch %d: the piee.beacon entry is epoch %d's", n, b.Epoch)
	}
	if vs == nil {
		if vs, err = c.Validators(ctx); err != nil {
			return err
		}
	}
	voters := make([]challenge.Voter, 0, len(vs.Validators))
	for _, v := range vs.Validators {
		pub, err := v.PublicKey()
		if err != nil {
			return malformed("validator set: %v", err)
		}
		voters = append(voters, challenge.Voter{Key: pub, Power: v.Power})
	}
	alpha := challenge.Alpha(vs.ChainID, n, verify.LeafHash(opened.Encode()))
	beacon, err := challenge.CombineShares(b, alpha, voters)
	if err != nil {
		return malformed("piee epoch %d beacon: %v", n, err)
	}
	e := &ep.Epoch
	if !reflect.DeepEqual(challenge.Draw(beacon, n, e.Participants, e.Operators, e.K), ep.Draw) {
		return malformed("piee epoch %d: the served draw is not the one its VRF shares give", n)
	}
	return nil
}

// PieeResults returns, for each challenged node of an epoch, each
// submitter's revealed Q, from the epoch's signed reveal entries (each
// statement's signature checked).
func (e *PieeEpoch) PieeResults() (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	for _, se := range e.Entries {
		if se.Entry.Kind != challenge.KindReveal {
			continue
		}
		rv, err := challenge.DecodeReveal(se.Entry.Body)
		if err != nil {
			return nil, fmt.Errorf("piee reveal: %w", err)
		}
		pub, err := protocol.ParseEd25519Key(se.Entry.Submitter)
		if err != nil {
			return nil, err
		}
		if err := rv.VerifyReveal(pub); err != nil {
			return nil, err
		}
		m := out[rv.Statement.Node]
		if m == nil {
			m = map[string]string{}
			out[rv.Statement.Node] = m
		}
		m[se.Entry.Submitter] = rv.Statement.Result
	}
	return out, nil
}
