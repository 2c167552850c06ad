package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	abci "github.com/cometbft/cometbft/abci/types"
	cmttypes "github.com/cometbft/cometbft/types"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Membership by governance (rule version 6; the rule itself, shared with
// clients, is verify.ValidatorProposal, verify.ValidatorSet.Follow):
//
//	validator.proposed {"change":"add|remove|power|rotate","validator":"ed25519:..",
//	                    "new_key":"ed25519:.."?,"power":N?,"set":V}
//	                   by a member of the current set (a rotation: by the rotated
//	                   key); V is the current set version; the change must apply.
//	validator.approved {"proposal":INDEX,"hash":"<proposal leaf hash, hex>"}
//	                   by another member of the same set, while the set is still
//	                   version V.
//
// The block in which proposer and approvers come to hold more than the
// genesis threshold of the set's power decides the change: the set
// becomes version V+1, FinalizeBlock hands consensus the validator
// updates, and from two blocks later (CometBFT's delay) the new set signs
// blocks and checkpoints. Proposals for version V still open then are
// void (refused approvals say so).
//
//	meta "validators"            the set as decided (JSON, storedValidator list)
//	meta "valset_version"        be64(V)
//	meta "validator_epochs"      JSON [{from, validators}]: the set that signs each height
//	meta "membership_threshold"  JSON verify.Threshold (absent: 2/3)
//	meta "genesis_time"          the genesis time, verify.TimeLayout
//	validator_proposals  be64(index) → be64(V) ‖ be64(decided version, 0 while open,
//	                     decidedInPlace for reference values, rule version 16)
//	                     ‖ (be64(entry index) ‖ 32-byte key)* — proposer first
//	validator_changes    be64(version) → JSON changeRecord

var (
	bucketValProposals = []byte("validator_proposals")
	bucketValChanges   = []byte("validator_changes")

	metaValsetVersion = []byte("valset_version")
	metaEpochs        = []byte("validator_epochs")
	metaThreshold     = []byte("membership_threshold")
	metaGenesisTime   = []byte("genesis_time")
	// metaGenesisValidators is the genesis set, kept as it was.
	metaGenesisValidators = []byte("genesis_validators")
)

// validatorUpdateDelay is how many blocks after the deciding block a new
// set signs (CometBFT applies FinalizeBlock's updates at H+2).
const validatorUpdateDelay = 2

// epoch is the validator set that signs from height From on.
type epoch struct {
	From       int64             `json:"from"`
	Validators []storedValidator `json:"validators"`
}

// changeRecord is what validator_changes keeps of a decided change; the
// API serves it with the entries it names (verify.ValidatorChange).
type changeRecord struct {
	Height    int64    `json:"height"`
	Effective int64    `json:"effective"`
	Proposal  uint64   `json:"proposal"`
	Approvals []uint64 `json:"approvals"`
}

func readValsetVersion(v blockView) uint64 {
	n, _ := getU64(v.get(bucketMeta, metaValsetVersion))
	return n
}

func readThreshold(get func(bucket, key []byte) []byte) verify.Threshold {
	t := verify.DefaultThreshold
	if raw := get(bucketMeta, metaThreshold); raw != nil {
		if json.Unmarshal(raw, &t) != nil || t.Check() != nil {
			return verify.DefaultThreshold
		}
	}
	return t
}

// publicSet is the decided set in the public form verify judges.
func publicSet(v blockView) (*verify.ValidatorSet, *verify.RejectedError) {
	vals, err := readValidators(v)
	if err != nil {
		return nil, reject(verify.CodeUnavailable, "%v", err)
	}
	return toPublicSet(string(v.get(bucketMeta, metaChainID)), vals)
}

func toPublicSet(chainID string, vals []storedValidator) (*verify.ValidatorSet, *verify.RejectedError) {
	infos := make([]verify.Validator, len(vals))
	for i, sv := range vals {
		var err error
		if infos[i], err = verify.NewValidator(chainID, sv.PubKey, sv.Power); err != nil {
			return nil, reject(verify.CodeUnavailable, "stored validator set: %v", err)
		}
	}
	vs, err := verify.NewValidatorSet(chainID, infos)
	if err != nil {
		return nil, reject(verify.CodeUnavailable, "stored validator set: %v", err)
	}
	return vs, nil
}

func fromPublicSet(vs *verify.ValidatorSet) []storedValidator {
	out := make([]storedValidator, len(vs.Validators))
	for i, v := range vs.Validators {
		pub, _ := v.PublicKey()
		out[i] = storedValidator{PubKey: pub, Power: v.Power}
	}
	return out
}

func ruleValidatorProposed(c *ruleCtx) ([]write, *verify.RejectedError) {
	p, err := verify.ParseValidatorProposal(c.se)
	if err != nil {
		return nil, reject(verify.CodeMalformed, "%v", err)
	}
	for _, k := range []string{p.Validator, p.NewKey} {
		if k == "" {
			continue
		}
		pk, _ := protocol.ParseEd25519Key(k)
		if err := checkSubmitterKey(pk); err != nil {
			return nil, reject(verify.CodeMalformed, "%s: key %s: %v", verify.KindValidatorProposed, k, err)
		}
	}
	vs, rej := publicSet(c.v)
	if rej != nil {
		return nil, rej
	}
	if vs.Power(c.pub) == 0 {
		return nil, reject(verify.CodeUnauthorized, "%s: the submitter is not a validator of the current set (version %d)", verify.KindValidatorProposed, readValsetVersion(c.v))
	}
	if p.Change == verify.ChangeRotate && p.Validator != c.se.Entry.Submitter {
		return nil, reject(verify.CodeUnauthorized, "%s rotate: signed by the key being rotated (%s), not by another", verify.KindValidatorProposed, p.Validator)
	}
	if cur := readValsetVersion(c.v); p.Set != cur {
		return nil, reject(verify.CodeReplay, "%s: proposes a change to set version %d; the set is at version %d", verify.KindValidatorProposed, p.Set, cur)
	}
	if _, err := p.Apply(vs); err != nil {
		return nil, reject(verify.CodeMalformed, "%s: %v", verify.KindValidatorProposed, err)
	}
	rec := append(append(be64(p.Set), be64(0)...), append(be64(c.index), c.pub...)...)
	return decideIfApproved(c, vs, p, c.index, rec)
}

func ruleValidatorApproved(c *ruleCtx) ([]write, *verify.RejectedError) {
	vs, a, rec, se, rej := approvedProposal(c)
	if rej != nil {
		return nil, rej
	}
	p, err := verify.ParseValidatorProposal(se)
	if err != nil {
		return nil, reject(verify.CodeUnavailable, "stored proposal %d: %v", a.Proposal, err)
	}
	return decideIfApproved(c, vs, p, a.Proposal, rec)
}

// approvedProposal checks a validator.approved entry against the
// proposal it names, and returns the current set, the approval, the
// proposal's record with this approval added, and the proposal entry.
func approvedProposal(c *ruleCtx) (*verify.ValidatorSet, *verify.ValidatorApproval, []byte, *verify.SignedEntry, *verify.RejectedError) {
	a, err := verify.ParseValidatorApproval(c.se)
	if err != nil {
		return nil, nil, nil, nil, reject(verify.CodeMalformed, "%v", err)
	}
	vs, rej := publicSet(c.v)
	if rej != nil {
		return nil, nil, nil, nil, rej
	}
	fail := func(code, format string, args ...any) (*verify.ValidatorSet, *verify.ValidatorApproval, []byte, *verify.SignedEntry, *verify.RejectedError) {
		return nil, nil, nil, nil, reject(code, format, args...)
	}
	if vs.Power(c.pub) == 0 {
		return fail(verify.CodeUnauthorized, "%s: the submitter is not a validator of the current set (version %d)", verify.KindValidatorApproved, readValsetVersion(c.v))
	}
	rec := c.v.get(bucketValProposals, be64(a.Proposal))
	tx, stored := c.v.entryTx(a.Proposal)
	if len(rec) < 16 || !stored {
		return fail(verify.CodeMissingReference, "%s: entry %d is not a validator proposal", verify.KindValidatorApproved, a.Proposal)
	}
	if leaf := verify.LeafHash(tx); hex.EncodeToString(leaf[:]) != a.Hash {
		return fail(verify.CodeMalformed, "%s: proposal %d has leaf hash %x, the approval names %s", verify.KindValidatorApproved, a.Proposal, leaf, a.Hash)
	}
	set, _ := getU64(rec[:8])
	if decided, _ := getU64(rec[8:16]); decided == decidedInPlace {
		return fail(verify.CodeReplay, "%s: proposal %d was decided already (its reference values are in force)", verify.KindValidatorApproved, a.Proposal)
	} else if decided != 0 {
		return fail(verify.CodeReplay, "%s: proposal %d was decided already (set version %d)", verify.KindValidatorApproved, a.Proposal, decided)
	}
	if cur := readValsetVersion(c.v); set != cur {
		return fail(verify.CodeReplay, "%s: proposal %d changes set version %d, and the set is at version %d since; propose again", verify.KindValidatorApproved, a.Proposal, set, cur)
	}
	for i := 16; i+40 <= len(rec); i += 40 {
		if bytes.Equal(rec[i+8:i+40], c.pub) {
			return fail(verify.CodeReplay, "%s: this validator approved proposal %d already (entry %d)", verify.KindValidatorApproved, a.Proposal, binaryU64(rec[i:i+8]))
		}
	}
	se, err := verify.DecodeEntry(tx)
	if err != nil {
		return fail(verify.CodeUnavailable, "stored proposal %d: %v", a.Proposal, err)
	}
	rec = append(bytes.Clone(rec), append(be64(c.index), c.pub...)...)
	return vs, a, rec, se, nil
}

func binaryU64(b []byte) uint64 { n, _ := getU64(b); return n }

// decideIfApproved stores the proposal record rec and, when its signers
// hold more than the threshold, decides the change.
func decideIfApproved(c *ruleCtx, vs *verify.ValidatorSet, p *verify.ValidatorProposal, index uint64, rec []byte) ([]write, *verify.RejectedError) {
	approvals, met := tallyProposal(c, vs, rec)
	if !met {
		return []write{{bucketValProposals, be64(index), rec}}, nil
	}
	next, err := p.Apply(vs)
	if err != nil {
		return nil, reject(verify.CodeMalformed, "%s: %v", c.body.kind, err)
	}
	version := p.Set + 1
	copy(rec[8:16], be64(version))
	vals := fromPublicSet(next)
	valsJSON, _ := json.Marshal(vals)
	epochs, rerr := readEpochs(c.v)
	if rerr != nil {
		return nil, reject(verify.CodeUnavailable, "%v", rerr)
	}
	from := c.height + validatorUpdateDelay
	if n := len(epochs); n > 0 && epochs[n-1].From == from {
		epochs = epochs[:n-1] // two changes decided in one block: the later wins
	}
	epochs = append(epochs, epoch{From: from, Validators: vals})
	epochsJSON, _ := json.Marshal(epochs)
	change, _ := json.Marshal(changeRecord{Height: c.height, Effective: from, Proposal: index, Approvals: approvals})
	return []write{
		{bucketValProposals, be64(index), rec},
		{bucketMeta, metaValidators, valsJSON},
		{bucketMeta, metaValsetVersion, be64(version)},
		{bucketMeta, metaEpochs, epochsJSON},
		{bucketValChanges, be64(version), change},
	}, nil
}

// tallyProposal returns the approvals' entry indexes in a proposal record (the
// proposer's excluded) and whether proposer and approvers hold more than
// the threshold of the set's power.
func tallyProposal(c *ruleCtx, vs *verify.ValidatorSet, rec []byte) ([]uint64, bool) {
	var signed int64
	var approvals []uint64
	for i := 16; i+40 <= len(rec); i += 40 {
		signed += vs.Power(ed25519.PublicKey(rec[i+8 : i+40]))
		if i > 16 {
			approvals = append(approvals, binaryU64(rec[i:i+8]))
		}
	}
	return approvals, readThreshold(c.v.get).Met(signed, vs.TotalPower())
}

// readEpochs reads the signing schedule; a chain without changes has one
// epoch, the genesis set from height 1.
func readEpochs(v blockView) ([]epoch, error) {
	return parseEpochs(v.get(bucketMeta, metaEpochs), func() ([]storedValidator, error) {
		return readValidators(v)
	})
}

func parseEpochs(raw []byte, genesis func() ([]storedValidator, error)) ([]epoch, error) {
	if raw == nil {
		vals, err := genesis()
		if err != nil {
			return nil, err
		}
		return []epoch{{From: 1, Validators: vals}}, nil
	}
	var eps []epoch
	if err := json.Unmarshal(raw, &eps); err != nil || len(eps) == 0 || eps[0].From != 1 {
		return nil, errors.New("the stored validator epochs are corrupt")
	}
	return eps, nil
}

// validatorEpochs is the app's in-memory signing schedule.
type validatorEpochs []struct {
	from int64
	set  *validatorSet
}

func newValidatorEpochs(chainID string, eps []epoch) (validatorEpochs, error) {
	out := make(validatorEpochs, len(eps))
	for i, e := range eps {
		keys := make([]validatorKey, len(e.Validators))
		for j, v := range e.Validators {
			keys[j] = validatorKey{pub: v.PubKey, power: v.Power}
		}
		vs, err := newValidatorSet(chainID, keys)
		if err != nil {
			return nil, fmt.Errorf("validator set from height %d: %w", e.From, err)
		}
		out[i].from, out[i].set = e.From, vs
	}
	return out, nil
}

// at is the set that signs blocks (and votes, and checkpoints) at height h.
func (e validatorEpochs) at(h int64) *validatorSet {
	if len(e) == 0 {
		return nil
	}
	s := e[0].set
	for _, x := range e {
		if x.from > h {
			break
		}
		s = x.set
	}
	return s
}

// validatorUpdates is what consensus must be told when the decided set
// goes from old to next: new keys and changed powers, and power 0 for keys
// that left.
func validatorUpdates(old, next []storedValidator) []abci.ValidatorUpdate {
	var ups []abci.ValidatorUpdate
	prev := map[string]int64{}
	for _, v := range old {
		prev[string(v.PubKey)] = v.Power
	}
	for _, v := range next {
		if p, ok := prev[string(v.PubKey)]; !ok || p != v.Power {
			ups = append(ups, abci.ValidatorUpdate{Power: v.Power, PubKeyType: "ed25519", PubKeyBytes: bytes.Clone(v.PubKey)})
		}
		delete(prev, string(v.PubKey))
	}
	for _, v := range old {
		if _, gone := prev[string(v.PubKey)]; gone {
			ups = append(ups, abci.ValidatorUpdate{Power: 0, PubKeyType: "ed25519", PubKeyBytes: bytes.Clone(v.PubKey)})
		}
	}
	slices.SortFunc(ups, func(a, b abci.ValidatorUpdate) int { return bytes.Compare(a.PubKeyBytes, b.PubKeyBytes) })
	return ups
}

// maxChangesPage bounds one page of GET /v1/validators/changes.
const maxChangesPage = 64

// genesisJSON is GET /v1/genesis: the genesis a client pins, and its hash
// (which the client computes again; it is there for people).
type genesisJSON struct {
	verify.Genesis
	Hash string `json:"hash"`
}

// handleGenesis serves GET /v1/genesis.
func (ln *ledgerNode) handleGenesis(w http.ResponseWriter, _ *http.Request) {
	ln.read(w, func(w http.ResponseWriter, r reader, _ committedState) error {
		g, err := readGenesis(r)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, verify.CodeUnavailable, "%v", err)
			return nil
		}
		writeJSON(w, http.StatusOK, genesisJSON{Genesis: *g, Hash: g.Hash()})
		return nil
	})
}

func readGenesis(r reader) (*verify.Genesis, error) {
	chainID := string(r.get(bucketMeta, metaChainID))
	raw := r.get(bucketMeta, metaGenesisValidators)
	if chainID == "" {
		return nil, errors.New("the chain has not started yet")
	}
	if raw == nil {
		// A store made before genesis validators were kept apart holds
		// the genesis set as its only set (no change could be made
		// without rule version 6).
		raw = r.get(bucketMeta, metaValidators)
	}
	var vals []storedValidator
	if err := json.Unmarshal(raw, &vals); err != nil {
		return nil, fmt.Errorf("stored genesis validators: %w", err)
	}
	vs, rej := toPublicSet(chainID, vals)
	if rej != nil {
		return nil, rej
	}
	return &verify.Genesis{ChainID: chainID, Time: string(r.get(bucketMeta, metaGenesisTime)),
		Validators: vs.Validators, Threshold: readThreshold(r.get)}, nil
}

// changesJSON is GET /v1/validators/changes: the current set version and
// the decided changes from the one asked for.
type changesJSON struct {
	Version uint64                   `json:"version"`
	Changes []verify.ValidatorChange `json:"changes"`
}

// handleValidatorChanges serves GET /v1/validators/changes?from=V: the
// changes that made set versions V, V+1, … (at most maxChangesPage), each
// with its proposal and approvals as the log holds them.
func (ln *ledgerNode) handleValidatorChanges(w http.ResponseWriter, req *http.Request) {
	from, ok, err := queryIndex(req, "from")
	if err != nil {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "%v", err)
		return
	}
	if !ok || from == 0 {
		from = 1
	}
	ln.read(w, func(w http.ResponseWriter, r reader, _ committedState) error {
		out := changesJSON{Version: readValsetVersion(blockView{r: r}), Changes: []verify.ValidatorChange{}}
		for v := from; v <= out.Version && len(out.Changes) < maxChangesPage; v++ {
			c, err := readChange(r, v)
			if err != nil {
				return err
			}
			out.Changes = append(out.Changes, *c)
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	})
}

func readChange(r reader, version uint64) (*verify.ValidatorChange, error) {
	var rec changeRecord
	if err := json.Unmarshal(r.get(bucketValChanges, be64(version)), &rec); err != nil {
		return nil, fmt.Errorf("validator set change %d: %w", version, err)
	}
	tx := func(i uint64) (json.RawMessage, error) {
		_, t, ok := r.entry(i)
		if !ok {
			return nil, fmt.Errorf("validator set change %d: entry %d missing", version, i)
		}
		return bytes.Clone(t), nil
	}
	c := &verify.ValidatorChange{Version: version, Height: rec.Height, Effective: rec.Effective, ProposalIndex: rec.Proposal, Approvals: []json.RawMessage{}}
	var err error
	if c.Proposal, err = tx(rec.Proposal); err != nil {
		return nil, err
	}
	for _, i := range rec.Approvals {
		a, err := tx(i)
		if err != nil {
			return nil, err
		}
		c.Approvals = append(c.Approvals, a)
	}
	return c, nil
}

// GenesisOf reads a CometBFT genesis document (genesis.json, as
// 'cloister ledger testnet' and 'cloister consortium init' write it) and
// returns what clients pin of it; its Hash is the genesis hash operators
// hand out (cloister ledger verify --genesis).
func GenesisOf(genesisJSON []byte) (*verify.Genesis, error) {
	gen, err := cmttypes.GenesisDocFromJSON(genesisJSON)
	if err != nil {
		return nil, fmt.Errorf("genesis: %w", err)
	}
	_, thr, err := readGenesisAppState(gen.AppState)
	if err != nil {
		return nil, err
	}
	vals := make([]storedValidator, len(gen.Validators))
	for i, v := range gen.Validators {
		vals[i] = storedValidator{PubKey: v.PubKey.Bytes(), Power: v.Power}
	}
	vs, rej := toPublicSet(gen.ChainID, vals)
	if rej != nil {
		return nil, errors.New(rej.Reason)
	}
	g := &verify.Genesis{ChainID: gen.ChainID, Time: verify.FormatTime(gen.GenesisTime), Validators: vs.Validators, Threshold: thr}
	return g, g.Check()
}
