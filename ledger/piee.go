package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/challenge"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Rule version 9: proof of isolated execution (package challenge gives the
// bodies and the pure functions; decisions 0130–0134, docs/piee.md).
//
//   - piee.operator, by a consortium member: a deterministic challenge
//     program by hash, its arguments and limits; a name is published once.
//   - piee.epoch, by a member or a registered node, once the previous
//     epoch's reveal deadline has passed: fixes the participants (every
//     registered node with a live offer, with its class), the operators in
//     force, k, and the commit and reveal deadlines from the block time.
//   - piee.commit, by a participant that the draw makes the challenged node
//     or one of its verifiers, before the commit deadline, once; refused
//     until the beacon (the first cosigned checkpoint after the epoch
//     entry) is published, since before it nobody knows the draw.
//   - piee.reveal, by the same submitter after the commit deadline and
//     before the reveal deadline: the statement (challenge, operator, seed
//     as drawn; Q the digest of the run it reports) signed by the
//     submitter's registered key, opening its commitment.
//   - piee.verdict, by a member or registered node after the reveal
//     deadline, once per (epoch, node): must equal challenge.Tally of the
//     ledger's reveals; it updates the node's and its verifiers' scores.
//
// State (JSON records unless said):
//
//	piee_operators  name -> operatorRecord
//	piee_epochs     be64(number) -> EpochRecord; "latest" -> be64(number)
//	piee_rounds     be64(epoch) ‖ node (32) ‖ submitter (32) -> roundRecord
//	piee_verdicts   be64(epoch) ‖ node (32) -> be64(index of the verdict)
//	piee_scores     node (32) -> Score
var (
	bucketPieeOperators = []byte("piee_operators")
	bucketPieeEpochs    = []byte("piee_epochs")
	bucketPieeRounds    = []byte("piee_rounds")
	bucketPieeVerdicts  = []byte("piee_verdicts")
	bucketPieeScores    = []byte("piee_scores")
	pieeLatest          = []byte("latest")
)

// OperatorRecord is a published operator and its entry.
type OperatorRecord struct {
	challenge.Operator
	Index     uint64 `json:"index"`
	Publisher string `json:"publisher"`
}

// EpochRecord is an epoch as the ledger fixed it. Beacon and the draw are
// not stored: anyone computes them from the checkpoint note at
// BeaconSize (GET /v1/piee/epochs/{n} serves both).
type EpochRecord struct {
	Number       uint64   `json:"number"`
	Index        uint64   `json:"index"`
	Opener       string   `json:"opener"`
	CommitBy     int64    `json:"commit_by"` // unix seconds, block time
	RevealBy     int64    `json:"reveal_by"`
	K            int      `json:"k"`
	Participants []string `json:"participants"` // sorted
	Classes      []string `json:"classes"`      // each participant's isolate class
	Operators    []string `json:"operators"`    // sorted names
	// Beacon is challenge.BeaconVRF for epochs opened under rule version
	// 10 on (the draw follows from the validators' VRF shares, in a
	// piee.beacon entry); empty for the checkpoint-note beacon.
	Beacon string `json:"beacon,omitempty"`
	// Opened is the block time (unix seconds) of the epoch entry, from
	// rule version 10 on, which spaces epochs challenge.EpochSpacing apart.
	Opened int64 `json:"opened,omitempty"`
}

// roundRecord is one submitter's part in one challenge.
type roundRecord struct {
	Commitment string `json:"commitment"`
	Commit     uint64 `json:"commit"`
	Result     string `json:"result,omitempty"`
	Reveal     uint64 `json:"reveal,omitempty"`
}

// Score is a node's record, as anyone recomputes it from the verdicts:
// as the challenged node (passed, failed, unavailable, inconclusive) and
// as a drawn verifier (agreed with the majority, disagreed, missing).
type Score struct {
	Node         string `json:"node"`
	Passed       uint64 `json:"passed"`
	Failed       uint64 `json:"failed"`
	Unavailable  uint64 `json:"unavailable"`
	Inconclusive uint64 `json:"inconclusive"`
	Verified     uint64 `json:"verified"`
	Disagreed    uint64 `json:"disagreed"`
	Missed       uint64 `json:"missed"`
}

func (c *ruleCtx) requireMemberOrNode() *verify.RejectedError {
	if isCurrentMember(c.v, c.pub) || c.v.get(bucketNodes, c.pub) != nil {
		return nil
	}
	return reject(verify.CodeUnauthorized, "%s entries come from consortium members and registered nodes", c.body.kind)
}

func rulePieeOperator(c *ruleCtx) ([]write, *verify.RejectedError) {
	o, err := challenge.DecodeOperator(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	if !isCurrentMember(c.v, c.pub) {
		return nil, reject(verify.CodeUnauthorized, "piee.operator: operators are published by consortium members")
	}
	if c.v.get(bucketPieeOperators, []byte(o.Name)) != nil {
		return nil, reject(verify.CodeReplay, "piee.operator: %s is published already; publish a new name for a new program", o.Name)
	}
	if len(c.v.keys(bucketPieeOperators)) >= challenge.MaxOperators {
		return nil, reject(verify.CodeTooLarge, "piee.operator: the registry holds %d operators, the limit", challenge.MaxOperators)
	}
	return []write{putRecord(bucketPieeOperators, []byte(o.Name), OperatorRecord{Operator: *o, Index: c.index, Publisher: protocol.FormatEd25519Key(c.pub)})}, nil
}

func latestEpoch(v blockView) (*EpochRecord, bool) {
	raw := v.get(bucketPieeEpochs, pieeLatest)
	if len(raw) != 8 {
		return nil, false
	}
	return getRecord[EpochRecord](v, bucketPieeEpochs, raw)
}

func rulePieeEpoch(c *ruleCtx) ([]write, *verify.RejectedError) { return pieeEpoch(c, "", 0) }

// pieeEpoch opens an epoch drawn from beacon ("" for the checkpoint
// note), at least spacing seconds of block time after the previous one
// opened (0: as soon as the previous one's reveals closed).
func pieeEpoch(c *ruleCtx, beacon string, spacing int64) ([]write, *verify.RejectedError) {
	e, err := challenge.DecodeEpoch(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	if rej := c.requireMemberOrNode(); rej != nil {
		return nil, rej
	}
	n := uint64(1)
	if last, ok := latestEpoch(c.v); ok {
		if c.now.Unix() < last.RevealBy {
			return nil, reject(verify.CodeReplay, "piee.epoch: epoch %d runs until %s; one epoch at a time", last.Number, time.Unix(last.RevealBy, 0).UTC().Format(time.RFC3339))
		}
		if spacing > 0 && last.Opened > 0 && c.now.Unix() < last.Opened+spacing {
			return nil, reject(verify.CodeReplay, "piee.epoch: epoch %d opened at %s; the ledger opens at most one epoch per %s, whoever asks: the next from %s",
				last.Number, time.Unix(last.Opened, 0).UTC().Format(time.RFC3339), time.Duration(spacing)*time.Second, time.Unix(last.Opened+spacing, 0).UTC().Format(time.RFC3339))
		}
		n = last.Number + 1
	}
	rec := EpochRecord{Number: n, Index: c.index, Opener: protocol.FormatEd25519Key(c.pub), K: e.K(),
		CommitBy: c.now.Unix() + int64(e.CommitSeconds), Beacon: beacon}
	if spacing > 0 {
		rec.Opened = c.now.Unix()
	}
	rec.RevealBy = rec.CommitBy + int64(e.RevealSeconds)
	for _, k := range c.v.keys(bucketPieeOperators) {
		rec.Operators = append(rec.Operators, string(k))
	}
	if len(rec.Operators) == 0 {
		return nil, reject(verify.CodeMissingReference, "piee.epoch: no operator is published")
	}
	for _, k := range c.v.keys(bucketOffers) {
		ov := c.v.get(bucketOffers, k)
		if len(ov) != 16 || c.v.get(bucketNodes, k) == nil {
			continue
		}
		if exp, _ := getU64(ov[8:]); int64(exp) <= c.now.Unix() {
			continue
		}
		rec.Participants = append(rec.Participants, protocol.FormatEd25519Key(ed25519.PublicKey(k)))
	}
	slices.Sort(rec.Participants)
	if len(rec.Participants) < 2 {
		return nil, reject(verify.CodeMissingReference, "piee.epoch: %d registered nodes have a live offer; a challenge needs at least 2 (one to answer, one to verify)", len(rec.Participants))
	}
	if len(rec.Participants) > challenge.MaxParticipants {
		rec.Participants = rec.Participants[:challenge.MaxParticipants]
	}
	for _, p := range rec.Participants {
		pk, _ := protocol.ParseEd25519Key(p)
		rec.Classes = append(rec.Classes, nodeClass(c.v, pk))
	}
	return []write{putRecord(bucketPieeEpochs, be64(n), rec), {bucketPieeEpochs, pieeLatest, be64(n)}}, nil
}

// nodeClass reads the isolate class a node registered with.
func nodeClass(v blockView, node ed25519.PublicKey) string {
	idx, ok := getU64(v.get(bucketNodes, node))
	if !ok {
		return ""
	}
	var b struct {
		Class string `json:"class"`
	}
	readEntryBody(v, idx, &b)
	return b.Class
}

// beaconNote returns the first cosigned checkpoint note of a log larger
// than the epoch entry's index, and its size.
func beaconNote(v blockView, epochIndex uint64) ([]byte, uint64, bool) {
	best, bestSize, found := []byte(nil), uint64(0), false
	if v.batch != nil {
		for k, val := range v.batch.puts[string(bucketCheckpoints)] {
			if s, _ := getU64([]byte(k)); s > epochIndex && (!found || s < bestSize) {
				best, bestSize, found = val, s, true
			}
		}
	}
	cur := v.r.tx.Bucket(bucketCheckpoints).Cursor()
	if k, val := cur.Seek(be64(epochIndex + 1)); k != nil {
		if s, _ := getU64(k); !found || s < bestSize {
			best, bestSize, found = bytes.Clone(val), s, true
		}
	}
	return best, bestSize, found
}

// epochDraw reads an epoch and its draw; the draw needs the beacon.
func (c *ruleCtx) epochDraw(n uint64) (*EpochRecord, []challenge.Challenge, *verify.RejectedError) {
	ep, ok := getRecord[EpochRecord](c.v, bucketPieeEpochs, be64(n))
	if !ok {
		return nil, nil, reject(verify.CodeMissingReference, "%s: no epoch %d", c.body.kind, n)
	}
	if ep.Beacon == challenge.BeaconVRF {
		b, ok := vrfBeacon(c.v, n)
		if !ok {
			return nil, nil, reject(verify.CodeUnavailable, "%s: epoch %d's beacon (the VRF shares of validators holding more than 2/3 of the power) is not on the ledger yet; try after the next blocks", c.body.kind, n)
		}
		return ep, challenge.Draw(b, n, ep.Participants, ep.Operators, ep.K), nil
	}
	note, _, ok := beaconNote(c.v, ep.Index)
	if !ok {
		return nil, nil, reject(verify.CodeUnavailable, "%s: epoch %d's beacon (the first checkpoint after entry %d) is not published yet; try after the next block", c.body.kind, n, ep.Index)
	}
	return ep, challenge.Draw(challenge.Beacon(note), n, ep.Participants, ep.Operators, ep.K), nil
}

func roundKey(epoch uint64, node, submitter ed25519.PublicKey) []byte {
	return append(append(be64(epoch), node...), submitter...)
}

func rulePieeCommit(c *ruleCtx) ([]write, *verify.RejectedError) {
	cm, err := challenge.DecodeCommit(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	ep, draw, rej := c.epochDraw(cm.Epoch)
	if rej != nil {
		return nil, rej
	}
	if c.now.Unix() >= ep.CommitBy {
		return nil, reject(verify.CodeStaleTime, "piee.commit: epoch %d's commit deadline %s has passed", ep.Number, time.Unix(ep.CommitBy, 0).UTC().Format(time.RFC3339))
	}
	ch, ok := challenge.Find(draw, cm.Node)
	if !ok {
		return nil, reject(verify.CodeMissingReference, "piee.commit: %s is not a participant of epoch %d", cm.Node, ep.Number)
	}
	me := protocol.FormatEd25519Key(c.pub)
	if me != ch.Node && !slices.Contains(ch.Verifiers, me) {
		return nil, reject(verify.CodeUnauthorized, "piee.commit: the submitter is neither %s nor one of the verifiers drawn for it in epoch %d", cm.Node, ep.Number)
	}
	node, _ := protocol.ParseEd25519Key(cm.Node)
	k := roundKey(ep.Number, node, c.pub)
	if prev := c.v.get(bucketPieeRounds, k); prev != nil {
		return nil, reject(verify.CodeReplay, "piee.commit: the submitter already committed for %s in epoch %d", cm.Node, ep.Number)
	}
	return []write{putRecord(bucketPieeRounds, k, roundRecord{Commitment: cm.Commitment, Commit: c.index})}, nil
}

func rulePieeReveal(c *ruleCtx) ([]write, *verify.RejectedError) {
	rv, err := challenge.DecodeReveal(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	if err := rv.VerifyReveal(c.pub); err != nil {
		return nil, refuse(verify.CodeBadSignature, c.body.kind, err)
	}
	s := &rv.Statement
	ep, draw, rej := c.epochDraw(s.Epoch)
	if rej != nil {
		return nil, rej
	}
	switch now := c.now.Unix(); {
	case now < ep.CommitBy:
		return nil, reject(verify.CodeStaleTime, "piee.reveal: epoch %d takes reveals from its commit deadline %s on, so no reveal can be copied into a commitment", ep.Number, time.Unix(ep.CommitBy, 0).UTC().Format(time.RFC3339))
	case now >= ep.RevealBy:
		return nil, reject(verify.CodeStaleTime, "piee.reveal: epoch %d's reveal deadline %s has passed", ep.Number, time.Unix(ep.RevealBy, 0).UTC().Format(time.RFC3339))
	}
	ch, ok := challenge.Find(draw, s.Node)
	if !ok {
		return nil, reject(verify.CodeMissingReference, "piee.reveal: %s is not a participant of epoch %d", s.Node, ep.Number)
	}
	op, _ := getRecord[OperatorRecord](c.v, bucketPieeOperators, []byte(ch.Operator))
	if s.Challenge != ch.ID || s.Operator != ch.Operator || s.Seed != ch.Seed || op == nil || s.Program != op.ProgramSHA256 {
		return nil, reject(verify.CodeMalformed, "piee.reveal: the statement names challenge %.12s…, operator %s, seed %.12s…; epoch %d drew %.12s…, %s, %.12s… for %s",
			s.Challenge, s.Operator, s.Seed, ep.Number, ch.ID, ch.Operator, ch.Seed, s.Node)
	}
	node, _ := protocol.ParseEd25519Key(s.Node)
	k := roundKey(ep.Number, node, c.pub)
	rr, ok := getRecord[roundRecord](c.v, bucketPieeRounds, k)
	if !ok {
		return nil, reject(verify.CodeMissingReference, "piee.reveal: the submitter made no piee.commit for %s in epoch %d before its deadline", s.Node, ep.Number)
	}
	if rr.Reveal != 0 {
		return nil, reject(verify.CodeReplay, "piee.reveal: the submitter already revealed for %s in epoch %d (entry %d)", s.Node, ep.Number, rr.Reveal)
	}
	if want := challenge.Commitment(c.pub, ch.ID, s.Result); want != rr.Commitment {
		return nil, reject(verify.CodeMalformed, "piee.reveal: result %.12s… does not open the submitter's commitment (entry %d)", s.Result, rr.Commit)
	}
	rr.Result, rr.Reveal = s.Result, c.index
	return []write{putRecord(bucketPieeRounds, k, rr)}, nil
}

// tally computes the verdict of node's challenge in ep from the ledger.
func tally(v blockView, ep *EpochRecord, ch challenge.Challenge) challenge.Verdict {
	node, _ := protocol.ParseEd25519Key(ch.Node)
	results := map[string]string{}
	for _, who := range append([]string{ch.Node}, ch.Verifiers...) {
		pk, _ := protocol.ParseEd25519Key(who)
		if rr, ok := getRecord[roundRecord](v, bucketPieeRounds, roundKey(ep.Number, node, pk)); ok && rr.Reveal != 0 {
			results[who] = rr.Result
		}
	}
	class := ""
	if i := slices.Index(ep.Participants, ch.Node); i >= 0 && i < len(ep.Classes) {
		class = ep.Classes[i]
	}
	return challenge.Tally(ep.Number, ch, results, class)
}

func rulePieeVerdict(c *ruleCtx) ([]write, *verify.RejectedError) {
	vd, err := challenge.DecodeVerdict(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	if rej := c.requireMemberOrNode(); rej != nil {
		return nil, rej
	}
	ep, draw, rej := c.epochDraw(vd.Epoch)
	if rej != nil {
		return nil, rej
	}
	if c.now.Unix() < ep.RevealBy {
		return nil, reject(verify.CodeStaleTime, "piee.verdict: epoch %d takes reveals until %s; a verdict comes after", ep.Number, time.Unix(ep.RevealBy, 0).UTC().Format(time.RFC3339))
	}
	ch, ok := challenge.Find(draw, vd.Node)
	if !ok {
		return nil, reject(verify.CodeMissingReference, "piee.verdict: %s is not a participant of epoch %d", vd.Node, ep.Number)
	}
	node, _ := protocol.ParseEd25519Key(vd.Node)
	vk := append(be64(ep.Number), node...)
	if prev := c.v.get(bucketPieeVerdicts, vk); prev != nil {
		i, _ := getU64(prev)
		return nil, reject(verify.CodeReplay, "piee.verdict: epoch %d's verdict on %s is entry %d", ep.Number, vd.Node, i)
	}
	want := tally(c.v, ep, ch)
	if !want.Equal(vd) {
		b, _ := json.Marshal(want)
		return nil, reject(verify.CodeMalformed, "piee.verdict: the ledger's reveals add up to %s", b)
	}
	ws := []write{{bucketPieeVerdicts, vk, be64(c.index)}}
	scores := map[string]*Score{}
	score := func(who string) *Score {
		if s, ok := scores[who]; ok {
			return s
		}
		pk, _ := protocol.ParseEd25519Key(who)
		s, ok := getRecord[Score](c.v, bucketPieeScores, pk)
		if !ok {
			s = &Score{Node: who}
		}
		scores[who] = s
		return s
	}
	s := score(vd.Node)
	switch vd.Outcome {
	case challenge.Pass:
		s.Passed++
	case challenge.Fail:
		s.Failed++
	case challenge.Unavailable:
		s.Unavailable++
	default:
		s.Inconclusive++
	}
	for _, w := range vd.Agree {
		score(w).Verified++
	}
	for _, w := range vd.Disagree {
		score(w).Disagreed++
	}
	for _, w := range vd.Missing {
		score(w).Missed++
	}
	for who, s := range scores {
		pk, _ := protocol.ParseEd25519Key(who)
		ws = append(ws, putRecord(bucketPieeScores, bytes.Clone(pk), s))
	}
	slices.SortFunc(ws, func(a, b write) int { return bytes.Compare(a.key, b.key) })
	return ws, nil
}

// keys lists a bucket's keys as the block sees them (committed plus the
// block's own writes), sorted. For small buckets only (operators, offers).
func (v blockView) keys(bucket []byte) [][]byte {
	seen := map[string]bool{}
	cur := v.r.tx.Bucket(bucket).Cursor()
	for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
		seen[string(k)] = true
	}
	if v.batch != nil {
		for k := range v.batch.puts[string(bucket)] {
			seen[k] = true
		}
	}
	out := make([][]byte, 0, len(seen))
	for k := range seen {
		out = append(out, []byte(k))
	}
	slices.SortFunc(out, bytes.Compare)
	return out
}

// PieeEpoch is GET /v1/piee/epochs/{n}'s answer: the epoch, the beacon's
// checkpoint note (so a client recomputes the draw), the draw, each
// challenge's commits, reveals and verdict as signed entries.
type PieeEpoch struct {
	Height     int64                 `json:"height"`
	Epoch      EpochRecord           `json:"epoch"`
	BeaconNote []byte                `json:"beacon_note,omitempty"`
	BeaconSize uint64                `json:"beacon_size,omitempty"`
	Draw       []challenge.Challenge `json:"draw,omitempty"`
	Entries    []json.RawMessage     `json:"entries"`
}

// PieeOperators is GET /v1/piee/operators's answer.
type PieeOperators struct {
	Height    int64            `json:"height"`
	Operators []OperatorRecord `json:"operators"`
}

// PieeScores is GET /v1/piee/scores's answer.
type PieeScores struct {
	Height int64   `json:"height"`
	Latest uint64  `json:"latest_epoch"`
	Scores []Score `json:"scores"`
}

func (ln *ledgerNode) handlePieeOperators(w http.ResponseWriter, _ *http.Request) {
	ln.read(w, func(w http.ResponseWriter, rd reader, st committedState) error {
		out := PieeOperators{Height: st.Height, Operators: []OperatorRecord{}}
		c := rd.tx.Bucket(bucketPieeOperators).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var o OperatorRecord
			if json.Unmarshal(v, &o) == nil {
				out.Operators = append(out.Operators, o)
			}
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	})
}

func (ln *ledgerNode) handlePieeScores(w http.ResponseWriter, _ *http.Request) {
	ln.read(w, func(w http.ResponseWriter, rd reader, st committedState) error {
		out := PieeScores{Height: st.Height, Scores: []Score{}}
		out.Latest, _ = getU64(rd.get(bucketPieeEpochs, pieeLatest))
		c := rd.tx.Bucket(bucketPieeScores).Cursor()
		for k, v := c.First(); k != nil && len(out.Scores) < maxMarketListed; k, v = c.Next() {
			var s Score
			if json.Unmarshal(v, &s) == nil {
				out.Scores = append(out.Scores, s)
			}
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	})
}

func (ln *ledgerNode) handlePieeEpoch(w http.ResponseWriter, r *http.Request) {
	ln.read(w, func(w http.ResponseWriter, rd reader, st committedState) error {
		var n uint64
		if s := r.PathValue("n"); s == "latest" {
			n, _ = getU64(rd.get(bucketPieeEpochs, pieeLatest))
		} else {
			var err error
			if n, err = strconv.ParseUint(s, 10, 64); err != nil {
				writeError(w, http.StatusBadRequest, verify.CodeMalformed, "epoch: want a number or latest")
				return nil
			}
		}
		v := blockView{r: rd}
		ep, ok := getRecord[EpochRecord](v, bucketPieeEpochs, be64(n))
		if !ok {
			writeError(w, http.StatusNotFound, verify.CodeNotFound, "no piee epoch %d", n)
			return nil
		}
		out := PieeEpoch{Height: st.Height, Epoch: *ep, Entries: []json.RawMessage{}}
		var idx []uint64
		if ep.Beacon == challenge.BeaconVRF {
			if rec, ok := getRecord[vrfBeaconRecord](v, bucketPieeBeacons, be64(n)); ok {
				out.Draw = challenge.Draw(rec.value(), ep.Number, ep.Participants, ep.Operators, ep.K)
				idx = append(idx, rec.Index)
			}
		} else if note, size, ok := beaconNote(v, ep.Index); ok {
			out.BeaconNote, out.BeaconSize = note, size
			out.Draw = challenge.Draw(challenge.Beacon(note), ep.Number, ep.Participants, ep.Operators, ep.K)
		}
		for _, ch := range out.Draw {
			node, _ := protocol.ParseEd25519Key(ch.Node)
			for _, who := range append([]string{ch.Node}, ch.Verifiers...) {
				pk, _ := protocol.ParseEd25519Key(who)
				if rr, ok := getRecord[roundRecord](v, bucketPieeRounds, roundKey(n, node, pk)); ok {
					idx = append(idx, rr.Commit)
					if rr.Reveal != 0 {
						idx = append(idx, rr.Reveal)
					}
				}
			}
			if i, ok := getU64(rd.get(bucketPieeVerdicts, append(be64(n), node...))); ok {
				idx = append(idx, i)
			}
		}
		idx = append(idx, ep.Index)
		slices.Sort(idx)
		for _, i := range idx {
			if _, tx, ok := rd.entry(i); ok {
				out.Entries = append(out.Entries, bytes.Clone(tx))
			}
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	})
}
