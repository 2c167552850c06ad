package ledger

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Evidence judged by consensus (rule version 13). The consortium agrees on
// reference values per isolate class in reference.values entries, signed
// by a validator of the current set (as members are admitted); each
// replaces the class's previous values. Once a class has reference values,
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

// referenceBody is a reference.values entry's body.
type referenceBody struct {
	Class           string            `json:"class"`
	Measurements    []string          `json:"measurements,omitempty"`
	MinSVN          map[string]uint64 `json:"min_svn,omitempty"`
	AcceptTCBStatus []string          `json:"accept_tcb_status,omitempty"`
	MaxAgeSeconds   uint64            `json:"max_age_seconds,omitempty"`
}

type referenceRecord struct {
	Index  uint64        `json:"index"`
	Values referenceBody `json:"values"`
}

const maxReferenceMeasurements = 256

func ruleReferenceValues(c *ruleCtx) ([]write, *verify.RejectedError) {
	if rej := c.requireValidator(); rej != nil {
		return nil, rej
	}
	var rb referenceBody
	if err := strictJSON(c.se.Entry.Body, &rb); err != nil {
		return nil, reject(verify.CodeMalformed, "reference.values body: %v", err)
	}
	switch {
	case rb.Class == "" || len(rb.Class) > 32:
		return nil, reject(verify.CodeMalformed, "reference.values: class must be an isolate class name (1 to 32 bytes)")
	case len(rb.Measurements) > maxReferenceMeasurements:
		return nil, reject(verify.CodeTooLarge, "reference.values: %d measurements, at most %d", len(rb.Measurements), maxReferenceMeasurements)
	case rb.MaxAgeSeconds > 366*24*3600:
		return nil, reject(verify.CodeMalformed, "reference.values: max_age_seconds above a year")
	}
	for _, m := range rb.Measurements {
		if b, err := hex.DecodeString(m); err != nil || len(b) == 0 || len(b) > 64 {
			return nil, reject(verify.CodeMalformed, "reference.values: measurement %.20q is not 1 to 64 bytes of lower-case hex", m)
		}
	}
	return []write{putRecord(bucketReferenceValues, []byte(rb.Class), referenceRecord{Index: c.index, Values: rb})}, nil
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
