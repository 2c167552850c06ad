package ledger

import (
	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/challenge"
	"github.com/cloisterhq/cloister/ledger/deal"
	"github.com/cloisterhq/cloister/ledger/model"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Entry kinds: what each means and who may submit it is the state
// machine's rules (authority.go, members.go), by rule version (rules.go).
// The entry format itself — canonical form, signature, leaf hash — is
// package verify's.
const (
	KindNote            verify.Kind = "note"
	KindNodeRegistered  verify.Kind = "node.registered"
	KindPolicyPublished verify.Kind = "policy.published"
	KindSessionEvent    verify.Kind = "session.event"
	KindACLGranted      verify.Kind = "acl.granted"
	KindACLRevoked      verify.Kind = "acl.revoked"
	KindResultCommitted verify.Kind = "result.committed"
	KindModelPublished  verify.Kind = "model.published"
	KindChallenge       verify.Kind = "challenge"
	KindVerdict         verify.Kind = "verdict"
	KindMemberAdmitted  verify.Kind = "member.admitted"
	KindMemberRemoved   verify.Kind = "member.removed"
	KindRulesScheduled  verify.Kind = "rules.scheduled"
	KindNodeEndpoint    verify.Kind = "node.endpoint"
	KindOffer           verify.Kind = "offer"
	// Membership by governance (rule version 5, governance.go).
	KindValidatorProposed verify.Kind = verify.KindValidatorProposed
	KindValidatorApproved verify.Kind = verify.KindValidatorApproved
	// The key broker's kinds (rule version 3): package acl gives their
	// bodies.
	KindArtifactRegistered verify.Kind = acl.KindArtifactRegistered
	KindACLDelegated       verify.Kind = acl.KindDelegated
	KindKeyReleased        verify.Kind = acl.KindKeyReleased
	// The marketplace's kinds (rule version 5): package deal gives their
	// bodies.
	KindMarketRequest   verify.Kind = deal.KindRequest
	KindMarketAssigned  verify.Kind = deal.KindAssigned
	KindMarketFailed    verify.Kind = deal.KindFailed
	KindMarketAccounted verify.Kind = deal.KindAccounted
	// Federation's kinds (rule version 7): package model gives their
	// bodies (model.published's own name is reserved since version 1).
	KindModelRevoked verify.Kind = model.KindRevoked
	KindModelCalled  verify.Kind = model.KindCalled
	// Proof of isolated execution (rule version 9): package challenge
	// gives their bodies.
	KindPieeOperator verify.Kind = challenge.KindOperator
	KindPieeEpoch    verify.Kind = challenge.KindEpoch
	KindPieeCommit   verify.Kind = challenge.KindCommit
	KindPieeReveal   verify.Kind = challenge.KindReveal
	KindPieeVerdict  verify.Kind = challenge.KindVerdict
	// Replicated sessions (rule version 11, replicas.go).
	KindReplicaResult      verify.Kind = "replica.result"
	KindReplicaDiscrepancy verify.Kind = "replica.discrepancy"
	// Principals' key rotation (rule version 12, keyrotation.go).
	KindKeyRotated verify.Kind = verify.KindKeyRotated
)

// Kinds lists every kind the state machine accepts under the latest rule
// version.
var Kinds = rulesFor(LatestRules).kindList()
