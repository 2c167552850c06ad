package ledger

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Evidence judged by consensus (rule version 13). The consortium agrees on
// reference values per isolate class: in version 13, in reference.values
// entries signed by any one validator of the current set (as members are
// admitted); from version 16, only as a governance change, a
// validator.proposed entry that members holding more than the genesis
// threshold of the set's power approve, as for membership (below). Each
// decided set of values replaces the class's previous ones. Once a class has reference values,
// the state machine verifies every node.registered of that class — and the
// recorded evidence behind every offer of a node of that class — with the
// one verifier per format (package attest), at the block time, never the
// wall clock, against those values, and refuses what fails with the
// reason. A class without reference values is judged as before (readers
// verify the evidence themselves).
//
//	reference_values  class → referenceRecord (JSON)
var bucketReferenceValues = []byte("reference_values")

// KindReferenceValues is the kind of the consortium's reference values.
const KindReferenceValues verify.Kind = "reference.values"

// ReferenceValues is a class's reference values: a reference.values
// entry's body (rule version 13), the values of a reference-values
// proposal (version 16).
type ReferenceValues struct {
	Class           string            `json:"class"`
	Measurements    []string          `json:"measurements,omitempty"`
	MinSVN          map[string]uint64 `json:"min_svn,omitempty"`
	AcceptTCBStatus []string          `json:"accept_tcb_status,omitempty"`
	MaxAgeSeconds   uint64            `json:"max_age_seconds,omitempty"`
}

// referenceRecord is a class's values in force: the entry that set them
// (version 13) or proposed them (version 16), and from version 16 the
// height that decided them and the approvals' entries.
type referenceRecord struct {
	Index     uint64          `json:"index"`
	Values    ReferenceValues `json:"values"`
	Height    int64           `json:"height,omitempty"`
	Approvals []uint64        `json:"approvals,omitempty"`
}

const maxReferenceMeasurements = 256

func ruleReferenceValues(c *ruleCtx) ([]write, *verify.RejectedError) {
	if rej := c.requireValidator(); rej != nil {
		return nil, rej
	}
	var rb ReferenceValues
	if err := strictJSON(c.se.Entry.Body, &rb); err != nil {
		return nil, reject(verify.CodeMalformed, "reference.values body: %v", err)
	}
	if rej := rb.check(string(KindReferenceValues)); rej != nil {
		return nil, rej
	}
	return []write{putRecord(bucketReferenceValues, []byte(rb.Class), referenceRecord{Index: c.index, Values: rb})}, nil
}

// check refuses values no verifier could hold evidence to; what names
// the entry in the reasons.
func (rb *ReferenceValues) check(what string) *verify.RejectedError {
	switch {
	case rb.Class == "" || len(rb.Class) > 32:
		return reject(verify.CodeMalformed, "%s: class must be an isolate class name (1 to 32 bytes)", what)
	case len(rb.Measurements) > maxReferenceMeasurements:
		return reject(verify.CodeTooLarge, "%s: %d measurements, at most %d", what, len(rb.Measurements), maxReferenceMeasurements)
	case rb.MaxAgeSeconds > 366*24*3600:
		return reject(verify.CodeMalformed, "%s: max_age_seconds above a year", what)
	}
	for _, m := range rb.Measurements {
		if b, err := hex.DecodeString(m); err != nil || len(b) == 0 || len(b) > 64 {
			return reject(verify.CodeMalformed, "%s: measurement %.20q is not 1 to 64 bytes of lower-case hex", what, m)
		}
	}
	return nil
}

// Reference values by governance (rule version 16). One validator no
// longer decides what evidence the whole consortium accepts: a
// reference.values entry is refused, and the values are proposed and
// approved with the kinds and the rule of membership changes,
//
//	validator.proposed {"change":"reference-values","values":{…as reference.values…},"set":V}
//	                   by a member of the current set, V the current set version;
//	validator.approved {"proposal":INDEX,"hash":"…"} by other members, as for any proposal.
//
// The block in which proposer and approvers come to hold more than the
// genesis threshold of the set's power puts the values in force for
// their class at once (no delay: they judge entries, not consensus). A
// decided membership change voids the proposals still open for the set
// before it, these included.
//
// From rule version 17 a proposal also names the class's values it
// replaces, as a membership proposal names the set version it changes:
//
//	validator.proposed {"change":"reference-values","values":{…},"set":V,"replaces":INDEX}
//
// INDEX is the entry that put the class's values in force (the "index" of
// GET /v1/reference-values/{class}); "replaces" is left out when the class
// has none. A proposal naming other values than those in force is
// refused, and once another proposal for the class is decided, approvals
// of one still open are refused (propose again), so nobody's approval
// counts towards replacing values other than those it was given to judge
// (decision 0174). Version 16 refuses "replaces", as it always did.

// ChangeReferenceValues is the change of a validator.proposed entry that
// proposes a class's reference values (rule version 16).
const ChangeReferenceValues = "reference-values"

// decidedInPlace marks a decided proposal that made no new set version.
const decidedInPlace = ^uint64(0)

// ReferenceProposal is the body of a validator.proposed entry proposing
// reference values.
type ReferenceProposal struct {
	Change string          `json:"change"`
	Values ReferenceValues `json:"values"`
	Set    uint64          `json:"set"`
	// Replaces is the entry that put the class's values in force when
	// the proposal was made, nil when the class had none (rule version
	// 17; version 16 refuses it).
	Replaces *uint64 `json:"replaces,omitempty"`
}

// ParseReferenceProposal reads a validator.proposed entry that proposes
// reference values; ok is false for other entries and other proposals.
func ParseReferenceProposal(se *verify.SignedEntry) (p *ReferenceProposal, ok bool, err error) {
	var head struct {
		Change string `json:"change"`
	}
	if se.Entry.Kind != verify.KindValidatorProposed || json.Unmarshal(se.Entry.Body, &head) != nil || head.Change != ChangeReferenceValues {
		return nil, false, nil
	}
	p = new(ReferenceProposal)
	if err := strictJSON(se.Entry.Body, p); err != nil {
		return nil, true, fmt.Errorf("%s %s body: %v", verify.KindValidatorProposed, ChangeReferenceValues, err)
	}
	if p.Replaces == nil && hasMember(se.Entry.Body, "replaces") {
		return nil, true, fmt.Errorf("%s %s body: replaces: want the index of the entry that put the class's values in force, or no member when it has none", verify.KindValidatorProposed, ChangeReferenceValues)
	}
	if rej := p.Values.check(string(verify.KindValidatorProposed) + " " + ChangeReferenceValues); rej != nil {
		return nil, true, errors.New(rej.Reason)
	}
	return p, true, nil
}

// ruleReferenceValuesV16 refuses what version 13 let one validator do.
func ruleReferenceValuesV16(c *ruleCtx) ([]write, *verify.RejectedError) {
	return nil, reject(verify.CodeUnauthorized, "%s: from rule version 16 one validator cannot set the consortium's reference values: "+
		"propose them (%s, change %q: cloister ledger propose %s) for members holding %s of the current set's power to approve (%s)",
		KindReferenceValues, verify.KindValidatorProposed, ChangeReferenceValues, ChangeReferenceValues, readThreshold(c.v.get), verify.KindValidatorApproved)
}

// ruleValidatorProposedV16 is version 6's proposal, which may also
// propose reference values.
func ruleValidatorProposedV16(c *ruleCtx) ([]write, *verify.RejectedError) {
	return proposeReferenceValues(c, false)
}

// ruleValidatorProposedV17 is version 16's proposal, reference values
// proposed naming the values they replace.
func ruleValidatorProposedV17(c *ruleCtx) ([]write, *verify.RejectedError) {
	return proposeReferenceValues(c, true)
}

// proposeReferenceValues judges a validator.proposed entry: a membership
// change by version 6's rule, reference values by version 16's, and with
// named (version 17) only if they replace the class's values in force.
func proposeReferenceValues(c *ruleCtx, named bool) ([]write, *verify.RejectedError) {
	p, ok, err := ParseReferenceProposal(c.se)
	if !ok {
		return ruleValidatorProposed(c)
	}
	if !named && hasMember(c.se.Entry.Body, "replaces") {
		// Version 16's body had no such member.
		err = fmt.Errorf("%s %s body: json: unknown field %q", verify.KindValidatorProposed, ChangeReferenceValues, "replaces")
	}
	if err != nil {
		return nil, reject(verify.CodeMalformed, "%v", err)
	}
	vs, rej := publicSet(c.v)
	if rej != nil {
		return nil, rej
	}
	cur := readValsetVersion(c.v)
	if vs.Power(c.pub) == 0 {
		return nil, reject(verify.CodeUnauthorized, "%s: the submitter is not a validator of the current set (version %d)", verify.KindValidatorProposed, cur)
	}
	if p.Set != cur {
		return nil, reject(verify.CodeReplay, "%s: proposes reference values to set version %d; the set is at version %d", verify.KindValidatorProposed, p.Set, cur)
	}
	if named {
		if inForce, stale := staleReference(c.v, p); stale {
			return nil, reject(verify.CodeReplay, "%s: proposes %s values replacing %s; %s: propose them again naming those (%s)",
				verify.KindValidatorProposed, p.Values.Class, describeReplaced(p.Replaces), inForce, replacesMember(c.v, p.Values.Class))
		}
	}
	rec := append(append(be64(p.Set), be64(0)...), append(be64(c.index), c.pub...)...)
	return decideReferenceValues(c, vs, p, c.index, rec), nil
}

// ruleValidatorApprovedV16 is version 6's approval, which may also
// approve proposed reference values.
func ruleValidatorApprovedV16(c *ruleCtx) ([]write, *verify.RejectedError) {
	return approveReferenceValues(c, false)
}

// ruleValidatorApprovedV17 is version 16's approval, refused for
// proposed reference values that no longer replace the class's values in
// force.
func ruleValidatorApprovedV17(c *ruleCtx) ([]write, *verify.RejectedError) {
	return approveReferenceValues(c, true)
}

func approveReferenceValues(c *ruleCtx, named bool) ([]write, *verify.RejectedError) {
	vs, a, rec, se, rej := approvedProposal(c)
	if rej != nil {
		return nil, rej
	}
	rp, ok, err := ParseReferenceProposal(se)
	if ok && err == nil {
		if named {
			if inForce, stale := staleReference(c.v, rp); stale {
				return nil, reject(verify.CodeReplay, "%s: proposal %d replaces %s of class %s, and %s since; propose again (cloister ledger propose %s)",
					verify.KindValidatorApproved, a.Proposal, describeReplaced(rp.Replaces), rp.Values.Class, inForce, ChangeReferenceValues)
			}
		}
		return decideReferenceValues(c, vs, rp, a.Proposal, rec), nil
	}
	p, err := verify.ParseValidatorProposal(se)
	if err != nil {
		return nil, reject(verify.CodeUnavailable, "stored proposal %d: %v", a.Proposal, err)
	}
	return decideIfApproved(c, vs, p, a.Proposal, rec)
}

// staleReference reports whether p's named values (p.Replaces) are not
// its class's values in force, and if so which are.
func staleReference(v blockView, p *ReferenceProposal) (inForce string, stale bool) {
	rec, ok := getRecord[referenceRecord](v, bucketReferenceValues, []byte(p.Values.Class))
	switch {
	case !ok && p.Replaces == nil:
		return "", false
	case !ok:
		return fmt.Sprintf("no %s values are in force", p.Values.Class), true
	case p.Replaces != nil && *p.Replaces == rec.Index:
		return "", false
	case rec.Height > 0:
		return fmt.Sprintf("the values of entry %d are in force (decided at height %d)", rec.Index, rec.Height), true
	}
	return fmt.Sprintf("the values of entry %d are in force", rec.Index), true
}

// describeReplaced names the values a proposal replaces.
func describeReplaced(replaces *uint64) string {
	if replaces == nil {
		return "no values"
	}
	return fmt.Sprintf("the values of entry %d", *replaces)
}

// replacesMember is the "replaces" member a proposal for class makes now.
func replacesMember(v blockView, class string) string {
	if rec, ok := getRecord[referenceRecord](v, bucketReferenceValues, []byte(class)); ok {
		return fmt.Sprintf(`"replaces":%d`, rec.Index)
	}
	return `no "replaces"`
}

// decideReferenceValues stores the proposal record rec and, when its
// signers hold more than the threshold, puts the values in force.
func decideReferenceValues(c *ruleCtx, vs *verify.ValidatorSet, p *ReferenceProposal, index uint64, rec []byte) []write {
	approvals, met := tallyProposal(c, vs, rec)
	if !met {
		return []write{{bucketValProposals, be64(index), rec}}
	}
	copy(rec[8:16], be64(decidedInPlace))
	return []write{
		{bucketValProposals, be64(index), rec},
		putRecord(bucketReferenceValues, []byte(p.Values.Class), referenceRecord{Index: index, Values: p.Values, Height: c.height, Approvals: approvals}),
	}
}

// handleReferenceValues serves GET /v1/reference-values/{class}: the
// class's values in force and the entries that put them there.
func (ln *ledgerNode) handleReferenceValues(w http.ResponseWriter, req *http.Request) {
	class := req.PathValue("class")
	if class == "" || len(class) > 32 {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "class: want an isolate class name (1 to 32 bytes)")
		return
	}
	ln.read(w, func(w http.ResponseWriter, r reader, _ committedState) error {
		rec, ok := getRecord[referenceRecord](blockView{r: r}, bucketReferenceValues, []byte(class))
		if !ok {
			writeError(w, http.StatusNotFound, verify.CodeNotFound, "no reference values are in force for class %.32q", class)
			return nil
		}
		writeJSON(w, http.StatusOK, rec)
		return nil
	})
}

// hasMember reports whether the JSON object body has member name.
func hasMember(body []byte, name string) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return false
	}
	_, ok := m[name]
	return ok
}

// strictJSON decodes a body refusing unknown members.
func strictJSON(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// judgeEvidence checks a node's evidence (base64 text) at block time
// against its class's reference values, if the consortium published
// any; it names the entry that published them in its refusal.
func judgeEvidence(v blockView, c *ruleCtx, class, evidence string) *verify.RejectedError {
	rec, ok := getRecord[referenceRecord](v, bucketReferenceValues, []byte(class))
	if !ok {
		return nil
	}
	fail := func(err error) *verify.RejectedError {
		return reject(verify.CodeUnauthorized, "%s: the node's %s evidence fails the consortium's reference values (entry %d) at block time %s: %v",
			c.body.kind, class, rec.Index, c.now.UTC().Format(verify.TimeLayout), err)
	}
	claims, err := registrationClaims(c.pub, evidence, c.now)
	if err != nil {
		return fail(err)
	}
	if string(claims.Class) != class {
		return fail(fmt.Errorf("the evidence is %s, not %s", claims.Class, class))
	}
	ref := attest.ReferenceValues{MinSVN: rec.Values.MinSVN, AcceptTCBStatus: rec.Values.AcceptTCBStatus,
		MaxAge: time.Duration(rec.Values.MaxAgeSeconds) * time.Second}
	for _, m := range rec.Values.Measurements {
		b, _ := hex.DecodeString(m)
		ref.Measurements = append(ref.Measurements, b)
	}
	if err := attest.Validate(claims, ref, c.now); err != nil {
		return fail(err)
	}
	return nil
}

// ruleNodeRegisteredV13 is version 4's registration, its evidence judged
// against its class's reference values.
func ruleNodeRegisteredV13(c *ruleCtx) ([]write, *verify.RejectedError) {
	var b struct {
		Class    string `json:"class"`
		Evidence string `json:"evidence"`
	}
	json.Unmarshal(c.se.Entry.Body, &b)
	ws, rej := ruleNodeRegisteredV4(c)
	if rej != nil {
		return nil, rej
	}
	if rej := judgeEvidence(c.v, c, b.Class, b.Evidence); rej != nil {
		return nil, rej
	}
	return ws, nil
}

// ruleOfferV13 is version 4's offer, the node's recorded evidence judged
// at block time against its class's reference values.
func ruleOfferV13(c *ruleCtx) ([]write, *verify.RejectedError) {
	ws, rej := ruleOffer(c)
	if rej != nil {
		return nil, rej
	}
	body, _ := registeredBody(c.v, c.pub)
	var b struct {
		Class    string `json:"class"`
		Evidence string `json:"evidence"`
	}
	json.Unmarshal(body, &b)
	if rej := judgeEvidence(c.v, c, b.Class, b.Evidence); rej != nil {
		return nil, rej
	}
	return ws, nil
}
