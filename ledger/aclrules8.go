package ledger

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	_ "github.com/cloisterhq/cloister/attest/all" // a node's recorded evidence may be of any class
	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Rule version 8: delegations limited by a minimum TCB per isolate class
// and by a rate of grants per window of block time (decision 0106).
//
// A delegate's grant under a delegation with a TCB floor must name a
// specific isolate; the ledger verifies the evidence its node recorded in
// node.registered — signatures and chains as of block time, the node's
// own key pinned for software evidence, bound to the node's key, not
// debug — and refuses the grant when the verified class is not the one
// the node declared or a floored component is missing or below the
// floor. A broker's key.released on such a grant reports the security
// versions it verified in the release evidence, and the ledger refuses it
// below the floor too. The rate counts the delegation's grants by block
// time.

func ruleACLDelegatedV8(c *ruleCtx) ([]write, *verify.RejectedError) { return aclDelegated(c, RulesV8) }

// ruleACLGrantedV8 is version 5's grant rule plus the TCB floor and the
// rate of the delegation a delegate grants under.
func ruleACLGrantedV8(c *ruleCtx) ([]write, *verify.RejectedError) {
	ws, rej := aclGranted(c, delegatedLimitsV8)
	if rej != nil {
		return nil, rej
	}
	return organisationsLimit(c, ws)
}

func delegatedLimitsV8(c *ruleCtx, d *delegationRecord, g *acl.Grant, nodeClass string) *verify.RejectedError {
	l := d.Delegation.Limits
	exceeds := func(format string, a ...any) *verify.RejectedError {
		return reject(verify.CodeUnauthorized, "acl.granted under delegation %d: %s", d.Index, fmt.Sprintf(format, a...))
	}
	if len(l.MinTCB) > 0 {
		if !g.Grantee.Specific() {
			return exceeds("%v: the delegation sets a minimum TCB, so a grant must name a node and session (whose evidence the ledger holds), not a class", acl.ErrExceeds)
		}
		node, _ := protocol.ParseEd25519Key(g.Grantee.Node)
		claims, err := recordedClaims(c.v, node, c.now)
		if err != nil {
			return exceeds("%v: the delegation sets a minimum TCB and the evidence node %s recorded does not verify at block time: %v", acl.ErrExceeds, g.Grantee.Node, err)
		}
		if string(claims.Class) != nodeClass {
			return exceeds("%v: node %s declared class %q, its recorded evidence is %s", acl.ErrExceeds, g.Grantee.Node, nodeClass, claims.Class)
		}
		if err := l.CheckTCB(string(claims.Class), claims.SVN); err != nil {
			return exceeds("node %s: %v", g.Grantee.Node, err)
		}
	}
	if l.Rate != nil {
		keep, err := l.Rate.Allows(d.Recent, c.now)
		if err != nil {
			return exceeds("%v", err)
		}
		d.Recent = append(keep, c.now.Unix())
	}
	return nil
}

// recordedClaims verifies the evidence of node's latest node.registered
// entry as of now (block time): the format's signatures and chains (the
// node's own key pinned, which software evidence is signed by), bound to
// the node's key by the registration report data, not from a debug
// isolate.
func recordedClaims(v blockView, node ed25519.PublicKey, now time.Time) (*attest.Claims, error) {
	body, ok := registeredBody(v, node)
	if !ok {
		return nil, fmt.Errorf("no node.registered entry")
	}
	var b struct {
		Evidence string `json:"evidence"`
	}
	json.Unmarshal(body, &b)
	return registrationClaims(node, b.Evidence, now)
}

// registrationClaims verifies a node.registered entry's evidence (its
// base64 text) as of now (block time): the format's signatures and chains
// (the node's own key pinned, which software evidence is signed by),
// bound to the node's key by the registration report data, not from a
// debug isolate.
func registrationClaims(node ed25519.PublicKey, evidence string, now time.Time) (*attest.Claims, error) {
	raw, err := base64.StdEncoding.Strict().DecodeString(evidence)
	if err != nil {
		return nil, fmt.Errorf("evidence: not standard base64")
	}
	var ev attest.Evidence
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, fmt.Errorf("evidence: not an attest.Evidence JSON object: %v", err)
	}
	claims, err := attest.Verify(context.Background(), &ev, attest.VerifyOptions{Now: now, TrustedKeys: []crypto.PublicKey{node}})
	if err != nil {
		return nil, err
	}
	rd := protocol.RegistrationReportData(node)
	if err := attest.Validate(claims, attest.ReferenceValues{ReportData: rd[:]}, now); err != nil {
		return nil, err
	}
	return claims, nil
}

// ruleKeyReleasedV8 is version 3's release rule, the security versions a
// release reports judged against the TCB floor of the delegation its
// grant was made under.
func ruleKeyReleasedV8(c *ruleCtx) ([]write, *verify.RejectedError) {
	r, err := acl.DecodeRelease(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	return keyReleased(c, r, func(d *delegationRecord) *verify.RejectedError {
		if err := d.Delegation.Limits.CheckTCB(r.Class, r.SVN); err != nil {
			return reject(verify.CodeUnauthorized, "key.released: grant %d was made under delegation %d: %v", r.Grant, d.Index, err)
		}
		return nil
	})
}
