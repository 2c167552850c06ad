package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/policy"
)

// The state machine's rules, kind by kind. Every rule reads the state
// through a blockView (committed state plus the entries accepted earlier in
// the same block) and returns the writes the entry makes, so CheckTx and
// FinalizeBlock judge an entry by exactly the same code.
//
// Bodies (fields not listed are refused where the list is closed, kept
// where it ends with "..."):
//
//	note               anything; anyone may submit.
//	node.registered    {"platform_key":"ed25519:..","class":"software","evidence":"<b64>","measurement":"hex"?}
//	                   submitter == platform_key; makes the key a registered node.
//	policy.published   {"policy_hash":"hex","policy":{...}}; the hash is the policy's
//	                   JCS hash (package policy); submitter is one of its principals.
//	session.event      {"session":"id","event":"session.<name>","policy_hash":"hex", ...}
//	                   registered node; policy_hash required for session.created; any
//	                   other event needs that node's session.created for the session
//	                   (and, if it names a policy hash, the same one).
//	result.committed   {"session":"id","outputs":{...},"signature":"...", ...}
//	                   registered node; needs that node's session.created.
//	acl.granted        {"resource":"...","grantee":"...", ...}; the first grant on a
//	                   resource makes the submitter its owner; later grants must come
//	                   from the owner.
//	acl.revoked        {"grant":<index of an acl.granted entry>, ...}; by the owner,
//	                   once.
//	model.published, challenge, verdict: registered node (bodies reserved;
//	                   model.published has its own rule from version 7, models.go).
//	member.admitted    {"member":"ed25519:..","name":"..."?}; a validator of the chain
//	                   makes the key a consortium member (members.go).
//	member.removed     {"member":"ed25519:.."}; a validator ends a membership.
//
// Common to all: the entry's time within maxClockSkew of the block time
// (local time in CheckTx), and a (submitter, nonce) pair never seen before.

// checkSubmitterKey refuses keys off the curve, non-canonical or of small
// order (keys.CheckSigningKey): under a small-order key anyone can make
// signatures, so its entries would speak for nobody, and a resource or
// session claimed with one would be open to all. Results are cached: a
// handful of keys (nodes, principals) sign most entries.
func checkSubmitterKey(pub ed25519.PublicKey) error {
	if _, ok := goodKeys.Load(string(pub)); ok {
		return nil
	}
	if err := keys.CheckSigningKey(pub); err != nil {
		return err
	}
	if goodKeyCount.Add(1) > 1<<16 {
		goodKeys.Clear()
		goodKeyCount.Store(0)
	}
	goodKeys.Store(string(pub), true)
	return nil
}

var (
	goodKeys     sync.Map
	goodKeyCount atomic.Int64
)

// maxClockSkew is how far an entry's own time may be from the block time.
const maxClockSkew = 10 * time.Minute

type write struct{ bucket, key, value []byte }

// validateEntry applies the rules of rs to an entry whose form and
// signature rs.decode already checked, as if it became record index of the
// block at height, at time now.
func validateEntry(v blockView, rs *ruleSet, se *verify.SignedEntry, index uint64, height int64, now time.Time) ([]write, *verify.RejectedError) {
	e := &se.Entry
	pub, err := protocol.ParseEd25519Key(e.Submitter)
	if err != nil {
		return nil, reject(verify.CodeMalformed, "entry submitter: %v", err)
	}
	if err := checkSubmitterKey(pub); err != nil {
		return nil, reject(verify.CodeMalformed, "entry submitter: %v", err)
	}
	rule, ok := rs.kinds[e.Kind]
	if !ok {
		return nil, reject(verify.CodeMalformed, "entry kind %.40q is not one of the ledger's kinds (rule version %d)", e.Kind, rs.version)
	}
	if d := e.ParsedTime().Sub(now); d > maxClockSkew || d < -maxClockSkew {
		return nil, reject(verify.CodeStaleTime, "entry time %s is %s away from the ledger's time %s; at most %s is allowed",
			e.Time, d.Abs().Round(time.Second), now.UTC().Format(verify.TimeLayout), maxClockSkew)
	}
	hashed := v.r.hashedNonces()
	nonceKey := nonceIndexKey(hashed, pub, e.Nonce)
	if prev := v.get(bucketNonces, nonceKey); prev != nil {
		return nil, nonceHeld(v, se, nonceHolder(hashed, prev))
	}
	b := body{kind: e.Kind}
	if e.Kind != KindNote { // a note's body is any object; don't parse it
		if err := json.Unmarshal(e.Body, &b.fields); err != nil {
			return nil, reject(verify.CodeMalformed, "%s body: %v", e.Kind, err)
		}
	}
	principal := pub
	if rs.keyRotation {
		var rej *verify.RejectedError
		if principal, rej = signingPrincipal(v, pub); rej != nil {
			return nil, rej
		}
	}
	ws, rej := rule(&ruleCtx{v: v, pub: principal, index: index, height: height, now: now, body: &b, se: se})
	if rej != nil {
		return nil, rej
	}
	ws = append(ws, write{bucketNonces, nonceKey, nonceIndexValue(hashed, index)})
	if hashed && v.get(bucketSubmitters, pub) == nil {
		ws = append(ws, write{bucketSubmitters, bytes.Clone(pub), be64(index)})
	}
	return ws, nil
}

// nonceHeld is the refusal of an entry whose (submitter, nonce) entry
// i already holds: it names the holder and says
// whether it is the same entry (kind and body) signed again.
func nonceHeld(v blockView, se *verify.SignedEntry, i uint64) *verify.RejectedError {
	rej := reject(verify.CodeReplay, "submitter already used nonce %d (entry %d); sign a new entry with a fresh nonce", se.Entry.Nonce, i)
	rej.HeldBy = &i
	if held, ok := v.entryTx(i); ok && len(held) > 0 {
		if prev, err := verify.DecodeEntry(held); err == nil {
			rej.SameEntry = prev.Entry.Kind == se.Entry.Kind && bytes.Equal(prev.Entry.Body, se.Entry.Body)
		}
	}
	return rej
}

type ruleCtx struct {
	v blockView
	// pub is the submitter: the principal whose key signed the entry (its
	// first key, since rule version 12 lets principals rotate keys).
	pub    ed25519.PublicKey
	index  uint64
	height int64
	// now is the block time (the local time in CheckTx): rules that judge
	// a window (grants, delegations) use it, never an entry's own time.
	now  time.Time
	body *body
	se   *verify.SignedEntry
}

// kindRule judges one entry of a kind and returns its writes.
type kindRule func(*ruleCtx) ([]write, *verify.RejectedError)

func ruleNodeRegistered(c *ruleCtx) ([]write, *verify.RejectedError) {
	b := c.body
	if rej := b.only("platform_key", "class", "evidence", "measurement"); rej != nil {
		return nil, rej
	}
	key, rej := b.str("platform_key", true, 64)
	if rej != nil {
		return nil, rej
	}
	pk, err := protocol.ParseEd25519Key(key)
	if err != nil {
		return nil, reject(verify.CodeMalformed, "node.registered body platform_key: %v", err)
	}
	if !pk.Equal(c.pub) {
		return nil, reject(verify.CodeUnauthorized, "node.registered: platform_key must be the submitter's key (a node registers itself)")
	}
	class, rej := b.str("class", true, 32)
	if rej != nil {
		return nil, rej
	}
	if !isToken(class) {
		return nil, reject(verify.CodeMalformed, "node.registered body class %q: want lower-case letters, digits and '-'", class)
	}
	ev, rej := b.str("evidence", true, verify.MaxEntryBytes)
	if rej != nil {
		return nil, rej
	}
	if _, err := base64.StdEncoding.Strict().DecodeString(ev); err != nil {
		return nil, reject(verify.CodeMalformed, "node.registered body evidence: not standard base64")
	}
	if m, rej := b.str("measurement", false, 256); rej != nil {
		return nil, rej
	} else if m != "" && !isLowerHex(m, 0) {
		return nil, reject(verify.CodeMalformed, "node.registered body measurement: want lower-case hex")
	}
	return []write{{bucketNodes, bytes.Clone(c.pub), be64(c.index)}}, nil
}

func rulePolicyPublished(c *ruleCtx) ([]write, *verify.RejectedError) {
	b := c.body
	if rej := b.only("policy_hash", "policy"); rej != nil {
		return nil, rej
	}
	h, rej := b.hash("policy_hash", true)
	if rej != nil {
		return nil, rej
	}
	raw, ok := b.fields["policy"]
	if !ok || len(raw) == 0 || raw[0] != '{' {
		return nil, reject(verify.CodeMalformed, "policy.published body: policy must be a JSON object")
	}
	p, err := policy.Parse(raw)
	if err != nil {
		return nil, reject(verify.CodeMalformed, "policy.published body policy: %v", err)
	}
	if got := p.HashHex(); got != h {
		return nil, reject(verify.CodeMalformed, "policy.published body: policy_hash %s does not match the policy's hash %s", h, got)
	}
	if _, ok := p.PrincipalBySigningKey(c.pub); !ok {
		return nil, reject(verify.CodeUnauthorized, "policy.published: the submitter is not a principal of policy %s", h)
	}
	return nil, nil
}

func (c *ruleCtx) requireNode() *verify.RejectedError {
	if c.v.get(bucketNodes, c.pub) == nil {
		return reject(verify.CodeUnauthorized, "%s entries come from registered nodes; the submitter has no node.registered entry", c.body.kind)
	}
	return nil
}

func ruleRegisteredNode(c *ruleCtx) ([]write, *verify.RejectedError) { return nil, c.requireNode() }

func sessionKey(pub ed25519.PublicKey, id string) []byte {
	return append(bytes.Clone(pub), id...)
}

func (c *ruleCtx) session() (id string, ref []byte, rej *verify.RejectedError) {
	id, rej = c.body.str("session", true, 128)
	if rej != nil {
		return "", nil, rej
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return "", nil, reject(verify.CodeMalformed, "%s body session: control characters are not allowed", c.body.kind)
		}
	}
	return id, c.v.get(bucketSessions, sessionKey(c.pub, id)), nil
}

func ruleSessionEvent(c *ruleCtx) ([]write, *verify.RejectedError) {
	b := c.body
	if rej := c.requireNode(); rej != nil {
		return nil, rej
	}
	ev, rej := b.str("event", true, 64)
	if rej != nil {
		return nil, rej
	}
	if name, ok := strings.CutPrefix(ev, "session."); !ok || !isEventName(name) {
		return nil, reject(verify.CodeMalformed, "session.event body event %q: want session.<name>, lower-case letters and '_'", ev)
	}
	id, ref, rej := c.session()
	if rej != nil {
		return nil, rej
	}
	ph, rej := b.hash("policy_hash", ev == "session.created")
	if rej != nil {
		return nil, rej
	}
	if ev == "session.created" {
		if ref != nil {
			i, _ := getU64(ref)
			return nil, reject(verify.CodeReplay, "session %q of this node was already created by entry %d", id, i)
		}
		phb := decodeHex32(ph)
		return []write{{bucketSessions, sessionKey(c.pub, id), append(be64(c.index), phb[:]...)}}, nil
	}
	if ref == nil {
		return nil, reject(verify.CodeMissingReference, "%s for session %q: this node has no session.created entry for it", ev, id)
	}
	if ph != "" {
		created := decodeHex32(ph)
		if len(ref) != 40 || !bytes.Equal(ref[8:], created[:]) {
			return nil, reject(verify.CodeMissingReference, "%s for session %q names policy %s, not the one its session.created names", ev, id, ph)
		}
	}
	return nil, nil
}

func ruleResultCommitted(c *ruleCtx) ([]write, *verify.RejectedError) {
	b := c.body
	if rej := c.requireNode(); rej != nil {
		return nil, rej
	}
	id, ref, rej := c.session()
	if rej != nil {
		return nil, rej
	}
	if raw, ok := b.fields["outputs"]; !ok || len(raw) == 0 || raw[0] != '{' {
		return nil, reject(verify.CodeMalformed, "result.committed body: outputs must be a JSON object of output hashes")
	}
	if _, rej := b.str("signature", true, 1024); rej != nil {
		return nil, rej
	}
	if ref == nil {
		return nil, reject(verify.CodeMissingReference, "result.committed for session %q: this node has no session.created entry for it", id)
	}
	return nil, nil
}

func ruleACLGranted(c *ruleCtx) ([]write, *verify.RejectedError) {
	b := c.body
	res, rej := b.str("resource", true, 256)
	if rej != nil {
		return nil, rej
	}
	if _, rej := b.str("grantee", true, 256); rej != nil {
		return nil, rej
	}
	var ws []write
	if owner := c.v.get(bucketACLOwners, []byte(res)); owner == nil {
		ws = append(ws, write{bucketACLOwners, []byte(res), bytes.Clone(c.pub)})
	} else if !bytes.Equal(owner, c.pub) {
		return nil, reject(verify.CodeUnauthorized, "acl.granted: resource %q belongs to another key (the one that granted on it first)", res)
	}
	grant := append(append(bytes.Clone(c.pub), be64(0)...), res...)
	return append(ws, write{bucketGrants, be64(c.index), grant}), nil
}

func ruleACLRevoked(c *ruleCtx) ([]write, *verify.RejectedError) {
	raw, ok := c.body.fields["grant"]
	if !ok {
		return nil, reject(verify.CodeMalformed, `acl.revoked body: missing "grant" (the index of the acl.granted entry)`)
	}
	gi, err := strconv.ParseUint(string(raw), 10, 64)
	if err != nil {
		return nil, reject(verify.CodeMalformed, "acl.revoked body grant: want a non-negative integer entry index")
	}
	g := c.v.get(bucketGrants, be64(gi))
	if len(g) < 40 {
		return nil, reject(verify.CodeMissingReference, "acl.revoked: entry %d is not an acl.granted entry", gi)
	}
	if !bytes.Equal(g[:32], c.pub) {
		return nil, reject(verify.CodeUnauthorized, "acl.revoked: grant %d was made by another key; only the resource owner revokes", gi)
	}
	if by, _ := getU64(g[32:40]); by != 0 {
		return nil, reject(verify.CodeReplay, "acl.revoked: grant %d was already revoked by entry %d", gi, by)
	}
	upd := append(append(bytes.Clone(g[:32]), be64(c.index)...), g[40:]...)
	return []write{{bucketGrants, be64(gi), upd}}, nil
}

// body is an entry body's top-level members, names matched exactly.
type body struct {
	kind   verify.Kind
	fields map[string]json.RawMessage
}

func (b *body) only(names ...string) *verify.RejectedError {
	for _, k := range slices.Sorted(maps.Keys(b.fields)) {
		if !slices.Contains(names, k) {
			return reject(verify.CodeMalformed, "%s body: unknown field %.40q (allowed: %s)", b.kind, k, strings.Join(names, ", "))
		}
	}
	return nil
}

// str returns a string member; "" if absent and not required.
func (b *body) str(name string, required bool, maxLen int) (string, *verify.RejectedError) {
	raw, ok := b.fields[name]
	if !ok {
		if required {
			return "", reject(verify.CodeMalformed, "%s body: missing %q", b.kind, name)
		}
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", reject(verify.CodeMalformed, "%s body %s: want a string", b.kind, name)
	}
	if s == "" || len(s) > maxLen {
		return "", reject(verify.CodeMalformed, "%s body %s: want 1 to %d bytes", b.kind, name, maxLen)
	}
	return s, nil
}

// uint returns a required member that is an integer from 0 to 2^53-1.
func (b *body) uint(name string) (uint64, *verify.RejectedError) {
	raw, ok := b.fields[name]
	if !ok {
		return 0, reject(verify.CodeMalformed, "%s body: missing %q", b.kind, name)
	}
	n, err := strconv.ParseUint(string(raw), 10, 64)
	if err != nil || n > verify.MaxNonce {
		return 0, reject(verify.CodeMalformed, "%s body %s: want an integer from 0 to 2^53-1", b.kind, name)
	}
	return n, nil
}

// hash returns a 64-hex-digit SHA-256 member.
func (b *body) hash(name string, required bool) (string, *verify.RejectedError) {
	s, rej := b.str(name, required, 64)
	if rej != nil || s == "" {
		return s, rej
	}
	if !isLowerHex(s, 64) {
		return "", reject(verify.CodeMalformed, "%s body %s: want 64 lower-case hex digits (SHA-256)", b.kind, name)
	}
	return s, nil
}

func isLowerHex(s string, n int) bool {
	if n > 0 && len(s) != n || len(s)%2 != 0 || s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func decodeHex32(s string) (out [32]byte) {
	for i := 0; i < len(s)/2 && i < 32; i++ {
		out[i] = unhex(s[2*i])<<4 | unhex(s[2*i+1])
	}
	return out
}

func unhex(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}

func isToken(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return s != ""
}

func isEventName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '_' || r == '.') {
			return false
		}
	}
	return s != ""
}
