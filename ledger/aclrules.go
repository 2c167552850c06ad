package ledger

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// The key broker's kinds (rule version 3 on): artifacts registered by
// their owner, grants of an artifact's key to an isolate judged at block
// time, delegations of the right to grant within the owner's limits,
// revocations, and key releases, each use counted once per (grant,
// session). Bodies are package acl's types, in their one form.
//
// State (JSON records, keys as in package acl):
//
//	artifacts        owner (32) ‖ ciphertext SHA-256 (32) -> artifactRecord
//	acl_grants       index -> grantRecord
//	acl_delegations  index -> delegationRecord
//	acl_uses         grant index ‖ node key (32) ‖ session id -> index of its first key.released

type artifactRecord struct {
	Index    uint64       `json:"index"`
	Artifact acl.Artifact `json:"artifact"`
}

type grantRecord struct {
	Index   uint64    `json:"index"`
	Grantor string    `json:"grantor"`
	Grant   acl.Grant `json:"grant"`
	// PolicyHash is the policy of a specific grantee's session, from its
	// session.created entry.
	PolicyHash string `json:"policy_hash,omitempty"`
	Used       uint64 `json:"used"`
	RevokedBy  uint64 `json:"revoked_by,omitempty"`
}

type delegationRecord struct {
	Index      uint64         `json:"index"`
	Owner      string         `json:"owner"`
	Delegation acl.Delegation `json:"delegation"`
	Grants     uint64         `json:"grants"`
	RevokedBy  uint64         `json:"revoked_by,omitempty"`
	// Recent holds the block times (Unix seconds) of the grants made
	// within the last window of the delegation's rate (rule version 8).
	Recent []int64 `json:"recent,omitempty"`
}

func getRecord[T any](v blockView, bucket, key []byte) (*T, bool) {
	raw := v.get(bucket, key)
	if raw == nil {
		return nil, false
	}
	var r T
	if json.Unmarshal(raw, &r) != nil {
		return nil, false
	}
	return &r, true
}

func putRecord(bucket, key []byte, r any) write {
	b, _ := json.Marshal(r)
	return write{bucket, key, b}
}

func (c *ruleCtx) raw() []byte {
	// The body as the entry carries it (canonical JSON); re-assembled from
	// its members for the decoders of package acl.
	b, _ := json.Marshal(c.body.fields)
	return b
}

func refuse(code string, kind verify.Kind, err error) *verify.RejectedError {
	return reject(code, "%s: %v", kind, err)
}

func (c *ruleCtx) artifact(owner, digest string) (*artifactRecord, *verify.RejectedError) {
	pk, err := protocol.ParseEd25519Key(owner)
	if err != nil {
		return nil, reject(verify.CodeMalformed, "%s owner: %v", c.body.kind, err)
	}
	a, ok := getRecord[artifactRecord](c.v, bucketArtifacts, acl.ArtifactKey(pk, digest))
	if !ok {
		return nil, reject(verify.CodeMissingReference, "%s: %s has no artifact %s (no artifact.registered entry)", c.body.kind, owner, digest)
	}
	return a, nil
}

func ruleArtifactRegistered(c *ruleCtx) ([]write, *verify.RejectedError) {
	a, err := acl.DecodeArtifact(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	key := acl.ArtifactKey(c.pub, a.Digest)
	if prev, ok := getRecord[artifactRecord](c.v, bucketArtifacts, key); ok {
		return nil, reject(verify.CodeReplay, "artifact.registered: this owner registered %s already (entry %d)", a.Digest, prev.Index)
	}
	return []write{putRecord(bucketArtifacts, key, artifactRecord{Index: c.index, Artifact: *a})}, nil
}

// nodeFacts returns what the ledger knows of a registered node: its
// class and measurement (from its latest node.registered entry).
func nodeFacts(v blockView, node ed25519.PublicKey) (class, measurement string, ok bool) {
	body, ok := registeredBody(v, node)
	var b struct {
		Class       string `json:"class"`
		Measurement string `json:"measurement"`
	}
	json.Unmarshal(body, &b)
	return b.Class, b.Measurement, ok
}

// registeredBody returns the body of node's latest node.registered entry
// (nil if unreadable) and whether the node is registered.
func registeredBody(v blockView, node ed25519.PublicKey) (json.RawMessage, bool) {
	ref := v.get(bucketNodes, node)
	if ref == nil {
		return nil, false
	}
	i, _ := getU64(ref)
	tx, ok := v.entryTx(i)
	if !ok || len(tx) == 0 {
		return nil, true
	}
	se, err := verify.DecodeEntry(tx)
	if err != nil {
		return nil, true
	}
	return se.Entry.Body, true
}

func ruleACLGrantedV3(c *ruleCtx) ([]write, *verify.RejectedError) { return aclGranted(c, nil) }

// delegatedCheck judges what a later rule version adds to a delegate's
// grant g under delegation record d (which it may update), given the
// grantee node's declared class ("" for class grants).
type delegatedCheck func(c *ruleCtx, d *delegationRecord, g *acl.Grant, nodeClass string) *verify.RejectedError

// aclGranted judges acl.granted as version 3 does, and more's checks of a
// delegate's grant (nil: none).
func aclGranted(c *ruleCtx, more delegatedCheck) ([]write, *verify.RejectedError) {
	g, err := acl.DecodeGrant(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	if _, rej := c.artifact(g.Owner, g.Artifact); rej != nil {
		return nil, rej
	}
	_, na, _ := g.Window()
	if !c.now.Before(na) {
		return nil, reject(verify.CodeMalformed, "acl.granted: not_after %s is already past (the ledger's time is %s)", g.NotAfter, acl.FormatTime(c.now))
	}
	if na.Sub(c.now) > acl.MaxWindow {
		return nil, reject(verify.CodeMalformed, "acl.granted: not_after %s is more than %s away", g.NotAfter, acl.MaxWindow)
	}
	rec := grantRecord{Index: c.index, Grantor: protocol.FormatEd25519Key(c.pub), Grant: *g}
	var nodeClass, nodeMeasurement string
	if g.Grantee.Specific() {
		node, _ := protocol.ParseEd25519Key(g.Grantee.Node)
		var ok bool
		if nodeClass, nodeMeasurement, ok = nodeFacts(c.v, node); !ok {
			return nil, reject(verify.CodeMissingReference, "acl.granted: grantee node %s has no node.registered entry", g.Grantee.Node)
		}
		ref := c.v.get(bucketSessions, sessionKey(node, g.Grantee.Session))
		if len(ref) != 40 {
			return nil, reject(verify.CodeMissingReference, "acl.granted: node %s has no session.created entry for session %q", g.Grantee.Node, g.Grantee.Session)
		}
		rec.PolicyHash = hex.EncodeToString(ref[8:])
	}
	var ws []write
	if rec.Grantor == g.Owner {
		if g.Delegation != nil {
			return nil, reject(verify.CodeMalformed, "acl.granted: the owner grants in its own right; delegation is for a delegate's grants")
		}
	} else {
		if g.Delegation == nil {
			return nil, reject(verify.CodeUnauthorized, "acl.granted: the submitter is not the owner of %s and names no delegation", g.Artifact)
		}
		d, ok := getRecord[delegationRecord](c.v, bucketDelegations, be64(*g.Delegation))
		switch {
		case !ok:
			return nil, reject(verify.CodeMissingReference, "acl.granted: entry %d is not an acl.delegated entry", *g.Delegation)
		case d.Delegation.Artifact != g.Artifact || d.Owner != g.Owner:
			return nil, reject(verify.CodeUnauthorized, "acl.granted: delegation %d is for another artifact", *g.Delegation)
		case d.Delegation.Delegate != rec.Grantor:
			return nil, reject(verify.CodeUnauthorized, "acl.granted: delegation %d names another delegate", *g.Delegation)
		case d.RevokedBy != 0:
			return nil, reject(verify.CodeUnauthorized, "acl.granted: delegation %d was revoked by entry %d", *g.Delegation, d.RevokedBy)
		}
		if end, _ := acl.ParseTime(d.Delegation.NotAfter); !c.now.Before(end) {
			return nil, reject(verify.CodeUnauthorized, "acl.granted: delegation %d ended %s", *g.Delegation, d.Delegation.NotAfter)
		}
		if m := d.Delegation.Limits.MaxGrants; m > 0 && d.Grants >= m {
			return nil, reject(verify.CodeUnauthorized, "acl.granted: delegation %d allows %d grants and all are made", *g.Delegation, m)
		}
		if err := d.Delegation.Permits(g, c.now, nodeClass, nodeMeasurement); err != nil {
			return nil, reject(verify.CodeUnauthorized, "acl.granted under delegation %d: %v", *g.Delegation, err)
		}
		if more != nil {
			if rej := more(c, d, g, nodeClass); rej != nil {
				return nil, rej
			}
		}
		d.Grants++
		ws = append(ws, putRecord(bucketDelegations, be64(d.Index), d))
	}
	return append(ws, putRecord(bucketACLGrants, be64(c.index), rec)), nil
}

func ruleACLDelegated(c *ruleCtx) ([]write, *verify.RejectedError) { return aclDelegated(c, RulesV3) }

// aclDelegated judges acl.delegated under rule version v: the
// organisations limit is known from version 5 on, the TCB floor and the
// rate from version 8 on.
func aclDelegated(c *ruleCtx, v int) ([]write, *verify.RejectedError) {
	d, err := acl.DecodeDelegation(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	if v < RulesV5 && len(d.Limits.Organisations) > 0 {
		return nil, reject(verify.CodeMalformed, "acl.delegated body limits: unknown field \"organisations\" (rule version 5 adds it)")
	}
	if v < RulesV8 && d.Limits.HasV8() {
		return nil, reject(verify.CodeMalformed, "acl.delegated body limits: unknown field \"min_tcb\" or \"rate\" (rule version 8 adds them)")
	}
	owner := protocol.FormatEd25519Key(c.pub)
	if _, rej := c.artifact(owner, d.Artifact); rej != nil {
		rej.Reason += "; only an artifact's owner delegates"
		return nil, rej
	}
	if end, _ := acl.ParseTime(d.NotAfter); !c.now.Before(end) || end.Sub(c.now) > acl.MaxWindow {
		return nil, reject(verify.CodeMalformed, "acl.delegated: not_after %s must lie after the ledger's time %s and within %s of it", d.NotAfter, acl.FormatTime(c.now), acl.MaxWindow)
	}
	return []write{putRecord(bucketDelegations, be64(c.index), delegationRecord{Index: c.index, Owner: owner, Delegation: *d})}, nil
}

func ruleACLRevokedV3(c *ruleCtx) ([]write, *verify.RejectedError) {
	r, err := acl.DecodeRevocation(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	who := protocol.FormatEd25519Key(c.pub)
	if r.Delegation != nil {
		d, ok := getRecord[delegationRecord](c.v, bucketDelegations, be64(*r.Delegation))
		switch {
		case !ok:
			return nil, reject(verify.CodeMissingReference, "acl.revoked: entry %d is not an acl.delegated entry", *r.Delegation)
		case d.Owner != who:
			return nil, reject(verify.CodeUnauthorized, "acl.revoked: only the artifact's owner revokes delegation %d", *r.Delegation)
		case d.RevokedBy != 0:
			return nil, reject(verify.CodeReplay, "acl.revoked: delegation %d was already revoked by entry %d", *r.Delegation, d.RevokedBy)
		}
		d.RevokedBy = c.index
		return []write{putRecord(bucketDelegations, be64(d.Index), d)}, nil
	}
	g, ok := getRecord[grantRecord](c.v, bucketACLGrants, be64(*r.Grant))
	switch {
	case !ok:
		return nil, reject(verify.CodeMissingReference, "acl.revoked: entry %d is not an acl.granted entry (of rule version 3 or later)", *r.Grant)
	case who != g.Grant.Owner && who != g.Grantor:
		return nil, reject(verify.CodeUnauthorized, "acl.revoked: grant %d is revoked by the artifact's owner or the delegate that made it", *r.Grant)
	case g.RevokedBy != 0:
		return nil, reject(verify.CodeReplay, "acl.revoked: grant %d was already revoked by entry %d", *r.Grant, g.RevokedBy)
	}
	g.RevokedBy = c.index
	return []write{putRecord(bucketACLGrants, be64(g.Index), g)}, nil
}

func ruleKeyReleased(c *ruleCtx) ([]write, *verify.RejectedError) {
	r, err := acl.DecodeRelease(c.raw())
	if err != nil {
		return nil, refuse(verify.CodeMalformed, c.body.kind, err)
	}
	if r.SVN != nil {
		return nil, reject(verify.CodeMalformed, "key.released body: unknown field \"svn\" (rule version 8 adds it)")
	}
	return keyReleased(c, r, nil)
}

// keyReleased judges release r as version 3 does, and more's checks of a
// release on a grant made under a delegation (nil: none).
func keyReleased(c *ruleCtx, r *acl.Release, more func(d *delegationRecord) *verify.RejectedError) ([]write, *verify.RejectedError) {
	a, rej := c.artifact(r.Owner, r.Artifact)
	if rej != nil {
		return nil, rej
	}
	if a.Artifact.BrokerIndex(protocol.FormatEd25519Key(c.pub)) != r.Share {
		return nil, reject(verify.CodeUnauthorized, "key.released: the submitter is not broker %d of artifact %s", r.Share, r.Artifact)
	}
	g, ok := getRecord[grantRecord](c.v, bucketACLGrants, be64(r.Grant))
	if !ok || g.Grant.Artifact != r.Artifact || g.Grant.Owner != r.Owner {
		return nil, reject(verify.CodeMissingReference, "key.released: entry %d is not a grant on artifact %s of %s", r.Grant, r.Artifact, r.Owner)
	}
	if g.RevokedBy != 0 {
		return nil, reject(verify.CodeUnauthorized, "key.released: grant %d was revoked by entry %d", r.Grant, g.RevokedBy)
	}
	if g.Grant.Delegation != nil {
		d, ok := getRecord[delegationRecord](c.v, bucketDelegations, be64(*g.Grant.Delegation))
		if !ok || d.RevokedBy != 0 {
			return nil, reject(verify.CodeUnauthorized, "key.released: grant %d was made under delegation %d, since revoked", r.Grant, *g.Grant.Delegation)
		}
		if more != nil {
			if rej := more(d); rej != nil {
				return nil, rej
			}
		}
	}
	if err := g.Grant.CheckWindow(c.now); err != nil {
		return nil, reject(verify.CodeUnauthorized, "key.released: grant %d: %v", r.Grant, err)
	}
	if err := g.Grant.Grantee.Matches(r.Node, r.Session, r.Class, r.Measurement); err != nil {
		return nil, reject(verify.CodeUnauthorized, "key.released: grant %d: %v", r.Grant, err)
	}
	node, _ := protocol.ParseEd25519Key(r.Node)
	if c.v.get(bucketNodes, node) == nil {
		return nil, reject(verify.CodeMissingReference, "key.released: node %s has no node.registered entry", r.Node)
	}
	ref := c.v.get(bucketSessions, sessionKey(node, r.Session))
	if len(ref) != 40 {
		return nil, reject(verify.CodeMissingReference, "key.released: node %s has no session.created entry for session %q", r.Node, r.Session)
	}
	if ph := hex.EncodeToString(ref[8:]); ph != r.PolicyHash {
		return nil, reject(verify.CodeUnauthorized, "key.released: the isolate's evidence binds policy %s; session %q of node %s was created for policy %s", r.PolicyHash, r.Session, r.Node, ph)
	}
	useKey := append(append(be64(r.Grant), node...), r.Session...)
	if c.v.get(bucketACLUses, useKey) != nil {
		return nil, nil // this session's use is counted already (another broker, a retry)
	}
	if g.Used >= g.Grant.MaxUses {
		return nil, reject(verify.CodeUnauthorized, "key.released: grant %d allows %d uses and all are used", r.Grant, g.Grant.MaxUses)
	}
	g.Used++
	return []write{putRecord(bucketACLGrants, be64(g.Index), g), {bucketACLUses, useKey, be64(c.index)}}, nil
}
