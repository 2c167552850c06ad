package ledger

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// Acceptance rules are versioned. Every change to what validators accept —
// the entry form, a new kind, a stricter check — is a new rule version
// that turns on at a block height; blocks below that height are judged by
// the rules they were first judged by, so a validator replaying the chain
// from genesis reaches the same state as the ones that ran it live. The
// schedule (height → version) starts with the version the genesis names
// and grows by rules.scheduled entries that validators holding more than
// two thirds of the voting power sign alike. docs/ledger.md ("Rule
// versions") and docs/decisions/0052-versioned-acceptance-rules.md tell how
// a later change adds its version.

// Rule versions this binary implements.
const (
	// RulesV1 is the first releases' rules: entries in the canonical form
	// of their own canonicalizer, which took bodies nested at most 32
	// levels deep (counting the body as level 0); the ten original kinds.
	// Chains whose genesis names no version run it from height 1.
	RulesV1 = 1
	// RulesV2 takes entries in the one canonical form of package verify
	// (any depth the whole transaction keeps within jcs.MaxDepth), and
	// adds the consortium kinds member.admitted and member.removed.
	RulesV2 = 2
	// RulesV3 adds the key broker's kinds (aclrules.go): artifact.registered,
	// acl.delegated and key.released, and replaces acl.granted and
	// acl.revoked: a grant names an artifact its owner registered (no
	// longer whoever granted first on a resource), an isolate, a window
	// judged at block time and a number of uses (decision 0100).
	RulesV3 = 3
	// RulesV4 makes nodes findable and lets them offer capacity
	// (offers.go): node.registered may carry an endpoint and an
	// organisation, node.endpoint moves a node, offer publishes and renews
	// a node's offer until its expiry (decision 0110).
	RulesV4 = 4
	// RulesV5 adds the marketplace's kinds (market.go): market.request,
	// market.assigned under a fencing token, market.failed and
	// market.accounted; and delegations limited to nodes of listed
	// organisations (decisions 0111, 0112).
	RulesV5 = 5
	// RulesV6 makes the validator set a matter of governance
	// (governance.go): validator.proposed and validator.approved change
	// it once members holding more than the genesis threshold of power
	// signed, and validator keys rotate by the old key's proposal
	// (decision 0150).
	RulesV6 = 6
	// RulesV7 adds federation's kinds (models.go): model.published by an
	// organisation for nodes registered for it (replacing version 1's
	// reserved form), model.revoked, and model.called, the receipt of
	// each sub-task a holder's node answered (decision 0120).
	RulesV7 = 7
	// RulesV8 adds to delegations a minimum TCB per isolate class, judged
	// on the grantee node's recorded evidence verified at block time and
	// on the security versions a broker's key.released reports, and a
	// rate of grants per window of block time (aclrules8.go, decision
	// 0106).
	RulesV8 = 8
	// RulesV9 adds proof of isolated execution (piee.go): piee.operator,
	// piee.epoch, piee.commit, piee.reveal and piee.verdict — challenges
	// drawn from a beacon no node can predict, commit–reveal, verdicts the
	// ledger recomputes (decisions 0130–0134).
	RulesV9 = 9
	// RulesV10 draws PIEE epochs from the validators' VRF shares
	// (piee_beacon.go): piee.epoch opens VRF epochs, vote extensions carry
	// each validator's share of the epoch's input, and piee.beacon puts a
	// quorum's shares on the ledger (decision 0137).
	RulesV10 = 10
	// RulesV11 adds replicated sessions (replicas.go): session.created
	// may name a replica set of nodes of distinct organisations,
	// replica.result commits each replica's result digest signed by its
	// session key, replica.discrepancy records results that disagree
	// (decision 0134).
	RulesV11 = 11
	// RulesV12 lets principals rotate their keys (keyrotation.go):
	// key.rotated, signed with the current key and by the next one, after
	// which the old key is refused and the new one acts as the principal
	// (decision 0153).
	RulesV12 = 12
	// RulesV13 judges evidence by consensus (evidencerules.go):
	// reference.values by a validator sets a class's reference values,
	// against which node.registered evidence, and the recorded evidence
	// behind offers, of that class are verified at block time
	// (decision 0155).
	RulesV13 = 13
	// RulesV14 adds plans to federation (models.go): a model may be
	// published in manual approval mode, and its receipts name the plan
	// a person of the owner approved (decision 0124).
	RulesV14 = 14
	// RulesV15 records workflows' call graphs (workflows.go):
	// workflow.recorded by the initiator's node names each call of a run
	// with its receipt and the calls it depended on (decision 0126).
	RulesV15 = 15
	// RulesV16 makes reference values a governance change
	// (evidencerules.go): reference.values by one validator is refused;
	// validator.proposed with change reference-values, approved by
	// members holding more than the genesis threshold of the set's power,
	// sets a class's values (decision 0159).
	RulesV16 = 16
	// RulesV17 makes a reference-values proposal name the class's values
	// it replaces (evidencerules.go): refused when they are not the ones
	// in force, and its approvals refused once other values were decided
	// for the class since (decision 0174).
	RulesV17 = 17
	// RulesV18 takes batch-signed entries (package verify, batch.go): a
	// submitter signs up to 256 entries with one signature over the root
	// of their Merkle tree, each entry carrying its audit path, so a
	// validator checks one signature per batch (decision 0175).
	RulesV18 = 18
	// LatestRules is the version new chains start with.
	LatestRules = RulesV18
)

// ruleSet is what one rule version accepts.
type ruleSet struct {
	version int
	// maxBodyDepth, when not 0, bounds the nesting of entry bodies (as
	// verify.Depth counts it) beyond what the canonical form allows.
	maxBodyDepth int
	// keyRotation: entries are judged as their principal's, and keys
	// rotated away from are refused (keyrotation.go).
	keyRotation bool
	// batchSigned: entries may be batch-signed (verify.Batch).
	batchSigned bool
	kinds       map[verify.Kind]kindRule
}

// ruleSets holds every version's rules; a package variable initialised by
// a function, so that other package variables (Kinds) may use it.
var ruleSets = makeRuleSets()

func makeRuleSets() map[int]*ruleSet {
	v1 := &ruleSet{version: RulesV1, maxBodyDepth: 32, kinds: map[verify.Kind]kindRule{
		KindNote:            func(*ruleCtx) ([]write, *verify.RejectedError) { return nil, nil },
		KindNodeRegistered:  ruleNodeRegistered,
		KindPolicyPublished: rulePolicyPublished,
		KindSessionEvent:    ruleSessionEvent,
		KindResultCommitted: ruleResultCommitted,
		KindACLGranted:      ruleACLGranted,
		KindACLRevoked:      ruleACLRevoked,
		KindModelPublished:  ruleRegisteredNode,
		KindChallenge:       ruleRegisteredNode,
		KindVerdict:         ruleRegisteredNode,
		// The schedule's own kind is in every version, the first one
		// included: without it a chain could never leave version 1.
		KindRulesScheduled: ruleRulesScheduled,
	}}
	v2 := v1.next(RulesV2)
	v2.maxBodyDepth = 0
	v2.kinds[KindMemberAdmitted] = ruleMemberAdmitted
	v2.kinds[KindMemberRemoved] = ruleMemberRemoved
	v3 := v2.next(RulesV3)
	v3.kinds[KindArtifactRegistered] = ruleArtifactRegistered
	v3.kinds[KindACLGranted] = ruleACLGrantedV3
	v3.kinds[KindACLRevoked] = ruleACLRevokedV3
	v3.kinds[KindACLDelegated] = ruleACLDelegated
	v3.kinds[KindKeyReleased] = ruleKeyReleased
	v4 := v3.next(RulesV4)
	v4.kinds[KindNodeRegistered] = ruleNodeRegisteredV4
	v4.kinds[KindNodeEndpoint] = ruleNodeEndpoint
	v4.kinds[KindOffer] = ruleOffer
	v5 := v4.next(RulesV5)
	v5.kinds[KindMarketRequest] = ruleMarketRequest
	v5.kinds[KindMarketAssigned] = ruleMarketAssigned
	v5.kinds[KindMarketFailed] = ruleMarketFailed
	v5.kinds[KindMarketAccounted] = ruleMarketAccounted
	v5.kinds[KindACLDelegated] = ruleACLDelegatedV5
	v5.kinds[KindACLGranted] = ruleACLGrantedV5
	v6 := v5.next(RulesV6)
	v6.kinds[KindValidatorProposed] = ruleValidatorProposed
	v6.kinds[KindValidatorApproved] = ruleValidatorApproved
	v7 := v6.next(RulesV7)
	v7.kinds[KindModelPublished] = ruleModelPublished
	v7.kinds[KindModelRevoked] = ruleModelRevoked
	v7.kinds[KindModelCalled] = ruleModelCalled
	v8 := v7.next(RulesV8)
	v8.kinds[KindACLDelegated] = ruleACLDelegatedV8
	v8.kinds[KindACLGranted] = ruleACLGrantedV8
	v8.kinds[KindKeyReleased] = ruleKeyReleasedV8
	v9 := v8.next(RulesV9)
	v9.kinds[KindPieeOperator] = rulePieeOperator
	v9.kinds[KindPieeEpoch] = rulePieeEpoch
	v9.kinds[KindPieeCommit] = rulePieeCommit
	v9.kinds[KindPieeReveal] = rulePieeReveal
	v9.kinds[KindPieeVerdict] = rulePieeVerdict
	v10 := v9.next(RulesV10)
	v10.kinds[KindPieeEpoch] = rulePieeEpochV10
	v10.kinds[KindPieeBeacon] = rulePieeBeacon
	v11 := v10.next(RulesV11)
	v11.kinds[KindSessionEvent] = ruleSessionEventV11
	v11.kinds[KindReplicaResult] = ruleReplicaResult
	v11.kinds[KindReplicaDiscrepancy] = ruleReplicaDiscrepancy
	v12 := v11.next(RulesV12)
	v12.keyRotation = true
	v12.kinds[KindKeyRotated] = ruleKeyRotated
	v13 := v12.next(RulesV13)
	v13.kinds[KindReferenceValues] = ruleReferenceValues
	v13.kinds[KindNodeRegistered] = ruleNodeRegisteredV13
	v13.kinds[KindOffer] = ruleOfferV13
	v14 := v13.next(RulesV14)
	v14.kinds[KindModelPublished] = ruleModelPublishedV14
	v14.kinds[KindModelCalled] = ruleModelCalledV14
	v15 := v14.next(RulesV15)
	v15.kinds[KindWorkflowRecorded] = ruleWorkflowRecorded
	v16 := v15.next(RulesV16)
	v16.kinds[KindReferenceValues] = ruleReferenceValuesV16
	v16.kinds[KindValidatorProposed] = ruleValidatorProposedV16
	v16.kinds[KindValidatorApproved] = ruleValidatorApprovedV16
	v17 := v16.next(RulesV17)
	v17.kinds[KindValidatorProposed] = ruleValidatorProposedV17
	v17.kinds[KindValidatorApproved] = ruleValidatorApprovedV17
	v18 := v17.next(RulesV18)
	v18.batchSigned = true
	return map[int]*ruleSet{v18.version: v18, v17.version: v17, v16.version: v16, v15.version: v15, v14.version: v14, v1.version: v1, v2.version: v2, v3.version: v3, v4.version: v4, v5.version: v5, v6.version: v6, v7.version: v7, v8.version: v8, v9.version: v9, v10.version: v10, v11.version: v11, v12.version: v12, v13.version: v13}
}

// next returns a copy of rs as version v, for the version that changes it.
func (rs *ruleSet) next(v int) *ruleSet {
	n := *rs
	n.version = v
	n.kinds = make(map[verify.Kind]kindRule, len(rs.kinds)+2)
	for k, r := range rs.kinds {
		n.kinds[k] = r
	}
	return &n
}

// rulesFor returns the rules of version v, nil if this binary lacks them.
func rulesFor(v int) *ruleSet { return ruleSets[v] }

func (rs *ruleSet) kindList() []verify.Kind {
	out := make([]verify.Kind, 0, len(rs.kinds))
	for k := range rs.kinds {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// decode checks a transaction's form and signature under rs: the one
// canonical form and signature rule of package verify, and this version's
// own limits.
func (rs *ruleSet) decode(tx []byte) (*verify.SignedEntry, *verify.RejectedError) {
	if isCheckpointTx(tx) || isTickTx(tx) {
		return nil, reject(verify.CodeMalformed, "transaction: 0x00 and 0x01 start the ledger's own transactions (checkpoints, ticks), not entries")
	}
	if len(tx) > verify.MaxEntryBytes {
		return nil, reject(verify.CodeTooLarge, "entry is %d bytes, limit %d", len(tx), verify.MaxEntryBytes)
	}
	se, err := verify.DecodeEntry(tx)
	if err != nil {
		return nil, reject(verify.CodeMalformed, "%v", err)
	}
	if se.Batch != nil && !rs.batchSigned {
		return nil, reject(verify.CodeMalformed, "entry is batch-signed; rule version %d takes only entries signed alone (batch signatures from version %d)", rs.version, RulesV18)
	}
	if rs.maxBodyDepth > 0 {
		if d, _ := verify.Depth(se.Entry.Body); d > rs.maxBodyDepth {
			return nil, reject(verify.CodeMalformed, "entry body: nested %d levels deep; rule version %d takes at most %d", d, rs.version, rs.maxBodyDepth)
		}
	}
	if err := se.VerifySignature(); err != nil {
		return nil, reject(verify.CodeBadSignature, "%v", err)
	}
	return se, nil
}

// RuleStep is one step of a chain's rule schedule: Version is in force
// from block Height on, until the next step.
type RuleStep struct {
	Height  int64 `json:"height"`
	Version int   `json:"version"`
}

// ruleSchedule is a chain's steps, by increasing height and version; the
// first is at height 1.
type ruleSchedule []RuleStep

// at returns the version in force at height h.
func (s ruleSchedule) at(h int64) int {
	v := RulesV1
	for _, st := range s {
		if st.Height > h {
			break
		}
		v = st.Version
	}
	return v
}

// last is the latest step.
func (s ruleSchedule) last() RuleStep {
	if len(s) == 0 {
		return RuleStep{Height: 1, Version: RulesV1}
	}
	return s[len(s)-1]
}

// rulesAt returns the rules in force at height h, or an error naming the
// version this binary lacks: it must not judge blocks by rules it does not
// know (the operator upgrades it and restarts; CometBFT replays).
func (s ruleSchedule) rulesAt(h int64) (*ruleSet, error) {
	v := s.at(h)
	if rs := rulesFor(v); rs != nil {
		return rs, nil
	}
	return nil, fmt.Errorf("ledger: rule version %d is in force from height %d, and this binary implements versions up to %d: upgrade it", v, s.stepOf(h).Height, LatestRules)
}

func (s ruleSchedule) stepOf(h int64) RuleStep {
	st := RuleStep{Height: 1, Version: RulesV1}
	for _, x := range s {
		if x.Height <= h {
			st = x
		}
	}
	return st
}

// genesisAppState is the part of the genesis app_state the ledger reads.
type genesisAppState struct {
	// RulesVersion is the rule version in force from height 1; absent
	// means RulesV1, the version of chains made before versions existed.
	RulesVersion int `json:"rules_version"`
	// MembershipThreshold is the share of the validators' power that
	// decides a validator-set change (absent: more than 2/3).
	MembershipThreshold *verify.Threshold `json:"membership_threshold,omitempty"`
}

// scheduleFromGenesis reads the initial schedule from a genesis app_state
// (possibly empty).
func scheduleFromGenesis(appState []byte) (ruleSchedule, error) {
	s, _, err := readGenesisAppState(appState)
	return s, err
}

// readGenesisAppState reads the rule schedule and the membership
// threshold from a genesis app_state (possibly empty).
func readGenesisAppState(appState []byte) (ruleSchedule, verify.Threshold, error) {
	v := RulesV1
	thr := verify.DefaultThreshold
	if len(bytes.TrimSpace(appState)) > 0 {
		var gs genesisAppState
		dec := json.NewDecoder(bytes.NewReader(appState))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&gs); err != nil {
			return nil, thr, fmt.Errorf("ledger genesis app_state: %w", err)
		}
		if gs.RulesVersion != 0 {
			v = gs.RulesVersion
		}
		if gs.MembershipThreshold != nil {
			if err := gs.MembershipThreshold.Check(); err != nil {
				return nil, thr, fmt.Errorf("ledger genesis: %w", err)
			}
			thr = *gs.MembershipThreshold
		}
	}
	if rulesFor(v) == nil {
		return nil, thr, fmt.Errorf("ledger genesis: rule version %d; this binary implements 1 to %d", v, LatestRules)
	}
	return ruleSchedule{{Height: 1, Version: v}}, thr, nil
}

// rules.scheduled entries. A validator (its consensus key, as for the
// member kinds) proposes that version V be in force from height H:
//
//	rules.scheduled  {"version":V,"height":H}
//
// The proposal takes effect — the step joins the schedule — in the block
// where the validators that signed that same (V, H) come to hold more than
// two thirds of the voting power. V must be a version this binary
// implements and later than the schedule's last; H must lie at least
// minRulesLead blocks after the block that carries the entry, so that no
// block is judged by rules that changed while it was being decided.
//
//	rule_votes: be32(V) ‖ be64(H) → the voters' 32-byte keys, concatenated

const minRulesLead = 2

func ruleRulesScheduled(c *ruleCtx) ([]write, *verify.RejectedError) {
	b := c.body
	if rej := b.only("version", "height"); rej != nil {
		return nil, rej
	}
	version, rej := b.uint("version")
	if rej != nil {
		return nil, rej
	}
	height, rej := b.uint("height")
	if rej != nil {
		return nil, rej
	}
	if rej := c.requireValidator(); rej != nil {
		return nil, rej
	}
	sched, err := readSchedule(c.v)
	if err != nil {
		return nil, reject(verify.CodeUnavailable, "rules.scheduled: %v", err)
	}
	last := sched.last()
	switch {
	case version > LatestRules:
		return nil, reject(verify.CodeMalformed, "rules.scheduled: version %d is not one this validator implements (up to %d); upgrade first", version, LatestRules)
	case int(version) <= last.Version:
		return nil, reject(verify.CodeReplay, "rules.scheduled: version %d is not later than version %d, scheduled from height %d", version, last.Version, last.Height)
	case int64(height) < c.height+minRulesLead:
		return nil, reject(verify.CodeMalformed, "rules.scheduled: height %d is too soon; this block is %d and a version turns on at least %d blocks later", height, c.height, minRulesLead)
	}
	key := binary.BigEndian.AppendUint32(nil, uint32(version))
	key = binary.BigEndian.AppendUint64(key, height)
	voters := c.v.get(bucketRuleVotes, key)
	for i := 0; i+32 <= len(voters); i += 32 {
		if bytes.Equal(voters[i:i+32], c.pub) {
			return nil, reject(verify.CodeReplay, "rules.scheduled: this validator already proposed version %d from height %d", version, height)
		}
	}
	voters = append(bytes.Clone(voters), c.pub...)
	ws := []write{{bucketRuleVotes, key, voters}}
	vals, err := readValidators(c.v)
	if err != nil {
		return nil, reject(verify.CodeUnavailable, "rules.scheduled: %v", err)
	}
	var signed, total int64
	for _, v := range vals {
		total += v.Power
		for i := 0; i+32 <= len(voters); i += 32 {
			if bytes.Equal(voters[i:i+32], v.PubKey) {
				signed += v.Power
			}
		}
	}
	if verify.Quorum(signed, total) {
		next := append(slices.Clone(sched), RuleStep{Height: int64(height), Version: int(version)})
		b, _ := json.Marshal(next)
		ws = append(ws, write{bucketMeta, metaRules, b})
	}
	return ws, nil
}

// readSchedule reads the schedule through the block's view.
func readSchedule(v blockView) (ruleSchedule, error) {
	return parseSchedule(v.get(bucketMeta, metaRules))
}

func parseSchedule(raw []byte) (ruleSchedule, error) {
	if raw == nil {
		return ruleSchedule{{Height: 1, Version: RulesV1}}, nil
	}
	var s ruleSchedule
	if err := json.Unmarshal(raw, &s); err != nil || len(s) == 0 || s[0].Height != 1 {
		return nil, errors.New("the stored rule schedule is corrupt")
	}
	return s, nil
}

// readValidators reads the chain's validators through the block's view.
func readValidators(v blockView) ([]storedValidator, error) {
	var vals []storedValidator
	raw := v.get(bucketMeta, metaValidators)
	if raw == nil || json.Unmarshal(raw, &vals) != nil {
		return nil, errors.New("the chain's validators are not known yet")
	}
	return vals, nil
}
