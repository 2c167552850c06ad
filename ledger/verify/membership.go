package verify

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/jcs"
)

// Membership by governance. The validator set starts as the genesis names
// it and changes only through ledger entries: a validator.proposed entry
// by a member of the current set proposes one change (add a validator,
// remove one, change its power, rotate its key), and validator.approved
// entries by other members approve it; the change is decided in the block
// where the proposer and approvers hold more than the genesis threshold
// of the current set's power (default 2/3). The ledger then hands the new
// set to consensus (it signs from two blocks later) and records the
// change.
//
// A client that knows only the genesis (its hash) follows every change
// from it: each change carries its proposal and approvals, entries signed
// by members of the set before it, and Follow checks them against that set
// alone. The server is trusted for nothing but availability. This file is
// the one rule both the ledger and its clients apply.

// Entry kinds of membership by governance.
const (
	KindValidatorProposed Kind = "validator.proposed"
	KindValidatorApproved Kind = "validator.approved"
)

// Changes a proposal may name.
const (
	ChangeAdd    = "add"    // a new validator with Power
	ChangeRemove = "remove" // Validator leaves the set
	ChangePower  = "power"  // Validator's power becomes Power
	ChangeRotate = "rotate" // Validator's key becomes NewKey (signed by the old key)
)

// ErrMembership: a validator-set change does not follow from the set
// before it (bad or missing signatures, too little power, a change that
// does not apply).
var ErrMembership = errors.New("validator set change does not verify")

// Threshold is the share of the current set's voting power that must
// approve a membership change: strictly more than Num/Den.
type Threshold struct {
	Num int64 `json:"num"`
	Den int64 `json:"den"`
}

// DefaultThreshold is more than two thirds.
var DefaultThreshold = Threshold{Num: 2, Den: 3}

// Check refuses thresholds below 2/3 (a change approved by fewer could be
// approved twice, differently, by overlapping minorities with one faulty
// member among them) or of 1 and above (no change could ever pass).
func (t Threshold) Check() error {
	if t.Den < 1 || t.Den > 1000 || t.Num < 1 || t.Num >= t.Den || 3*t.Num < 2*t.Den {
		return fmt.Errorf("membership threshold %d/%d: want a fraction from 2/3 to below 1, denominator at most 1000", t.Num, t.Den)
	}
	return nil
}

// Met reports whether signed power is more than the threshold of total.
func (t Threshold) Met(signed, total int64) bool {
	l := new(big.Int).Mul(big.NewInt(signed), big.NewInt(t.Den))
	r := new(big.Int).Mul(big.NewInt(total), big.NewInt(t.Num))
	return l.Cmp(r) > 0
}

func (t Threshold) String() string { return fmt.Sprintf("more than %d/%d", t.Num, t.Den) }

// Genesis is what a client pins about a ledger: chain, genesis time,
// initial validator set and the membership threshold. Its hash (Hash) is
// what an operator hands to clients instead of a validator set.
type Genesis struct {
	ChainID    string      `json:"chain_id"`
	Time       string      `json:"genesis_time"`
	Validators []Validator `json:"validators"`
	Threshold  Threshold   `json:"threshold"`
}

// Check checks the genesis's set and threshold.
func (g *Genesis) Check() error {
	if _, err := g.Set(); err != nil {
		return err
	}
	return g.Threshold.Check()
}

// Set is the genesis validator set.
func (g *Genesis) Set() (*ValidatorSet, error) { return NewValidatorSet(g.ChainID, g.Validators) }

// Hash is the lower-case hex SHA-256 of the genesis in canonical JSON,
// validators sorted by name and addresses in lower case.
func (g *Genesis) Hash() string {
	n := *g
	n.Validators = (&ValidatorSet{Validators: g.Validators}).sorted()
	b, err := json.Marshal(&n)
	if err == nil {
		b, err = jcs.Canonicalize(b)
	}
	if err != nil {
		panic("verify: genesis does not marshal: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// ValidatorProposal is the body of a validator.proposed entry.
type ValidatorProposal struct {
	Change string `json:"change"`
	// Validator is the key added, removed, re-powered or rotated away
	// from ("ed25519:…").
	Validator string `json:"validator"`
	// NewKey is the key a rotation moves to.
	NewKey string `json:"new_key,omitempty"`
	// Power is the power of an added validator or the new power.
	Power int64 `json:"power,omitempty"`
	// Set is the version of the set the change applies to (0: genesis's;
	// each decided change adds one); a proposal for an older set is void.
	Set uint64 `json:"set"`
}

// ValidatorApproval is the body of a validator.approved entry: it names
// the proposal by its log index and its leaf hash, so an approval cannot
// be carried over to another proposal or another log.
type ValidatorApproval struct {
	Proposal uint64 `json:"proposal"`
	Hash     string `json:"hash"`
}

// ParseValidatorProposal reads and checks a validator.proposed entry's
// body (not its signature, nor whether it applies).
func ParseValidatorProposal(se *SignedEntry) (*ValidatorProposal, error) {
	if se.Entry.Kind != KindValidatorProposed {
		return nil, fmt.Errorf("entry kind %q, want %s", se.Entry.Kind, KindValidatorProposed)
	}
	var p ValidatorProposal
	if err := strictBody(se.Entry.Body, &p); err != nil {
		return nil, fmt.Errorf("%s body: %v", KindValidatorProposed, err)
	}
	if _, err := protocol.ParseEd25519Key(p.Validator); err != nil {
		return nil, fmt.Errorf("%s body validator: %v", KindValidatorProposed, err)
	}
	switch p.Change {
	case ChangeAdd, ChangePower:
		if p.Power < 1 || p.Power > MaxTotalPower || p.NewKey != "" {
			return nil, fmt.Errorf("%s %s: want a power from 1 to %d and no new_key", KindValidatorProposed, p.Change, int64(MaxTotalPower))
		}
	case ChangeRemove:
		if p.Power != 0 || p.NewKey != "" {
			return nil, fmt.Errorf("%s remove: takes no power and no new_key", KindValidatorProposed)
		}
	case ChangeRotate:
		if p.Power != 0 {
			return nil, fmt.Errorf("%s rotate: takes no power (the validator keeps its own)", KindValidatorProposed)
		}
		if _, err := protocol.ParseEd25519Key(p.NewKey); err != nil {
			return nil, fmt.Errorf("%s body new_key: %v", KindValidatorProposed, err)
		}
	default:
		return nil, fmt.Errorf("%s body change %.20q: want add, remove, power or rotate", KindValidatorProposed, p.Change)
	}
	return &p, nil
}

// ParseValidatorApproval reads and checks a validator.approved entry's
// body.
func ParseValidatorApproval(se *SignedEntry) (*ValidatorApproval, error) {
	if se.Entry.Kind != KindValidatorApproved {
		return nil, fmt.Errorf("entry kind %q, want %s", se.Entry.Kind, KindValidatorApproved)
	}
	var a ValidatorApproval
	if err := strictBody(se.Entry.Body, &a); err != nil {
		return nil, fmt.Errorf("%s body: %v", KindValidatorApproved, err)
	}
	if h, err := hex.DecodeString(a.Hash); err != nil || len(h) != sha256.Size || hex.EncodeToString(h) != a.Hash {
		return nil, fmt.Errorf("%s body hash: want the proposal's leaf hash, 64 lower-case hex digits", KindValidatorApproved)
	}
	return &a, nil
}

func strictBody(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// Apply returns the set vs becomes under the change, or why the change
// does not apply to it.
func (p *ValidatorProposal) Apply(vs *ValidatorSet) (*ValidatorSet, error) {
	pub, _ := protocol.ParseEd25519Key(p.Validator)
	vals := slices.Clone(vs.Validators)
	at := vs.index(pub)
	switch p.Change {
	case ChangeAdd:
		if at >= 0 {
			return nil, fmt.Errorf("%s is a validator already", p.Validator)
		}
		v, err := NewValidator(vs.ChainID, pub, p.Power)
		if err != nil {
			return nil, err
		}
		vals = append(vals, v)
	case ChangeRemove:
		if at < 0 {
			return nil, fmt.Errorf("%s is not a validator", p.Validator)
		}
		if len(vals) == 1 {
			return nil, errors.New("the last validator cannot be removed")
		}
		vals = slices.Delete(vals, at, at+1)
	case ChangePower:
		if at < 0 {
			return nil, fmt.Errorf("%s is not a validator", p.Validator)
		}
		if vals[at].Power == p.Power {
			return nil, fmt.Errorf("%s has power %d already", p.Validator, p.Power)
		}
		vals[at].Power = p.Power
	case ChangeRotate:
		if at < 0 {
			return nil, fmt.Errorf("%s is not a validator", p.Validator)
		}
		npub, _ := protocol.ParseEd25519Key(p.NewKey)
		if vs.index(npub) >= 0 {
			return nil, fmt.Errorf("%s is a validator already", p.NewKey)
		}
		v, err := NewValidator(vs.ChainID, npub, vals[at].Power)
		if err != nil {
			return nil, err
		}
		vals[at] = v
	}
	next := &ValidatorSet{ChainID: vs.ChainID, Origin: vs.Origin, Validators: vals}
	if err := next.Check(); err != nil {
		return nil, err
	}
	return next, nil
}

// index is the position of the validator with key pub, or -1.
func (vs *ValidatorSet) index(pub ed25519.PublicKey) int {
	addr := hex.EncodeToString(ValidatorAddress(pub))
	for i, v := range vs.Validators {
		if k, err := v.PublicKey(); err == nil && k.Equal(pub) && addrEqual(v.Address, addr) {
			return i
		}
	}
	return -1
}

func addrEqual(a, b string) bool { return bytes.EqualFold([]byte(a), []byte(b)) }

// Power returns the power of the validator with key pub (0: not one).
func (vs *ValidatorSet) Power(pub ed25519.PublicKey) int64 {
	if i := vs.index(pub); i >= 0 {
		return vs.Validators[i].Power
	}
	return 0
}

// ValidatorChange is one decided change, as the ledger serves it
// (GET /v1/validators/changes): the proposal and the approvals that
// decided it, in the log's bytes, and where it took effect.
type ValidatorChange struct {
	// Version is the set version the change made (the first change makes 1).
	Version uint64 `json:"version"`
	// Height is the block that decided the change; from Effective on,
	// the new set signs blocks and checkpoints.
	Height    int64 `json:"height"`
	Effective int64 `json:"effective"`
	// ProposalIndex is the proposal's log index; Proposal and Approvals
	// are entry transactions.
	ProposalIndex uint64            `json:"proposal_index"`
	Proposal      json.RawMessage   `json:"proposal"`
	Approvals     []json.RawMessage `json:"approvals"`
}

// Follow checks that change c follows from set vs under threshold t and
// returns the set it makes: the proposal is for vs's version (version-1
// of c), signed by a member of vs (by the rotated key itself for a
// rotation); each approval names the proposal's index and leaf hash and is
// signed by another member; proposer and approvers hold more than the
// threshold of vs's power; and the change applies to vs.
func (vs *ValidatorSet) Follow(c *ValidatorChange, t Threshold) (*ValidatorSet, error) {
	fail := func(format string, args ...any) (*ValidatorSet, error) {
		return nil, Errorf(ErrMembership, "validator set change %d: "+format, append([]any{c.Version}, args...)...)
	}
	if c.Version == 0 {
		return fail("version 0 is the genesis set")
	}
	if len(c.Approvals) > MaxValidators {
		return fail("%d approvals, more than a set has members", len(c.Approvals))
	}
	prop, pub, err := signedBy(c.Proposal)
	if err != nil {
		return fail("proposal: %v", err)
	}
	p, err := ParseValidatorProposal(prop)
	if err != nil {
		return fail("%v", err)
	}
	if p.Set != c.Version-1 {
		return fail("the proposal is for set version %d", p.Set)
	}
	if p.Change == ChangeRotate && p.Validator != prop.Entry.Submitter {
		return fail("a rotation is proposed by the rotated key itself, not %s", prop.Entry.Submitter)
	}
	signed := vs.Power(pub)
	if signed == 0 {
		return fail("proposed by %s, not a member of the set", prop.Entry.Submitter)
	}
	seen := map[string]bool{string(pub): true}
	leaf := LeafHash(c.Proposal)
	for i, raw := range c.Approvals {
		ap, apub, err := signedBy(raw)
		if err != nil {
			return fail("approval %d: %v", i, err)
		}
		a, err := ParseValidatorApproval(ap)
		if err != nil {
			return fail("approval %d: %v", i, err)
		}
		if a.Proposal != c.ProposalIndex || a.Hash != hex.EncodeToString(leaf[:]) {
			return fail("approval %d approves proposal %d (%s), not this one", i, a.Proposal, a.Hash)
		}
		if seen[string(apub)] {
			return fail("approval %d: %s approves twice", i, ap.Entry.Submitter)
		}
		seen[string(apub)] = true
		pw := vs.Power(apub)
		if pw == 0 {
			return fail("approval %d by %s, not a member of the set", i, ap.Entry.Submitter)
		}
		signed += pw
	}
	if !t.Met(signed, vs.TotalPower()) {
		return fail("approved by %d of %d voting power, the threshold is %s", signed, vs.TotalPower(), t)
	}
	next, err := p.Apply(vs)
	if err != nil {
		return fail("%v", err)
	}
	if c.Effective != c.Height+2 {
		return fail("effective at %d, two blocks after the deciding block %d", c.Effective, c.Height)
	}
	return next, nil
}

// signedBy decodes a transaction and verifies its signature.
func signedBy(tx []byte) (*SignedEntry, ed25519.PublicKey, error) {
	se, err := DecodeEntry(tx)
	if err != nil {
		return nil, nil, err
	}
	if err := se.VerifySignature(); err != nil {
		return nil, nil, err
	}
	pub, _ := protocol.ParseEd25519Key(se.Entry.Submitter)
	return se, pub, nil
}
