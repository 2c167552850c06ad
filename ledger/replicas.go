package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Rule version 11: replicated sessions (decision 0134).
//
//   - session.event "session.created" may name a replica set: its body
//     carries "replica_set" (an id of a session id's form) and
//     "replica_members" (the platform keys of the set's nodes, 2 to
//     MaxReplicaMembers). The members must be registered nodes, each
//     registered for an organisation, no two for the same one (one
//     organisation is one replica, however many nodes it runs); the
//     submitter is one of them. The first such entry fixes the set
//     (members, policy); each later one must name the same and joins
//     once per member.
//   - replica.result, by a member that joined with the session it names,
//     once: the replica's result digest (protocol.ReplicaDigest), signed
//     by the session's key over protocol.ReplicaResultMessage.
//   - replica.discrepancy, by a member or a consortium member, once per
//     set: accepted only when the results recorded so far disagree, and
//     its "results" (node → digest) must be exactly those results.
//
// State: replica_sets  set id -> ReplicaSet (JSON)
var bucketReplicaSets = []byte("replica_sets")

// MaxReplicaMembers bounds a replica set (the policy's MaxReplicas).
const MaxReplicaMembers = 64

// ReplicaSet is a replica set as the ledger keeps it and GET
// /v1/replicas/{set} serves it.
type ReplicaSet struct {
	Set        string          `json:"set"`
	PolicyHash string          `json:"policy_hash"`
	Members    []ReplicaMember `json:"members"`
	// Discrepancy is the index of the set's replica.discrepancy entry, 0
	// while none.
	Discrepancy uint64 `json:"discrepancy,omitempty"`
}

// ReplicaMember is one node of a replica set.
type ReplicaMember struct {
	Node         string `json:"node"`
	Organisation string `json:"organisation"`
	// Registered is the index of the node's node.registered entry (which
	// names its organisation and class).
	Registered uint64 `json:"registered"`
	Session    string `json:"session,omitempty"`
	Created    uint64 `json:"created,omitempty"` // its session.created entry
	Result     uint64 `json:"result,omitempty"`  // its replica.result entry
	Digest     string `json:"digest,omitempty"`
}

// Agreed reports whether every member committed the same digest.
func (s *ReplicaSet) Agreed() bool {
	for _, m := range s.Members {
		if m.Result == 0 || m.Digest != s.Members[0].Digest {
			return false
		}
	}
	return true
}

// Disagreeing reports whether two committed digests differ.
func (s *ReplicaSet) Disagreeing() bool {
	d := ""
	for _, m := range s.Members {
		if m.Result == 0 {
			continue
		}
		if d != "" && m.Digest != d {
			return true
		}
		d = m.Digest
	}
	return false
}

func (s *ReplicaSet) member(node string) int {
	return slices.IndexFunc(s.Members, func(m ReplicaMember) bool { return m.Node == node })
}

// ruleSessionEventV11 is version 1's session.event rule, plus replica
// sets on session.created.
func ruleSessionEventV11(c *ruleCtx) ([]write, *verify.RejectedError) {
	_, hasSet := c.body.fields["replica_set"]
	_, hasMembers := c.body.fields["replica_members"]
	ws, rej := ruleSessionEvent(c)
	if rej != nil || (!hasSet && !hasMembers) {
		return ws, rej
	}
	if ev, _ := c.body.str("event", true, 64); ev != "session.created" {
		return nil, reject(verify.CodeMalformed, "session.event: only session.created names a replica set")
	}
	set, rej := c.body.str("replica_set", true, 2*protocol.SessionIDSize)
	if rej != nil {
		return nil, rej
	}
	if protocol.ValidSessionID(set) != nil {
		return nil, reject(verify.CodeMalformed, "session.event body replica_set: want %d lower-case hex digits", 2*protocol.SessionIDSize)
	}
	members, rej := c.body.strs("replica_members", true, MaxReplicaMembers, 64)
	if rej != nil {
		return nil, rej
	}
	session, _ := c.body.str("session", true, 128)
	ph, _ := c.body.hash("policy_hash", true)
	self := protocol.FormatEd25519Key(c.pub)
	st, had := getRecord[ReplicaSet](c.v, bucketReplicaSets, []byte(set))
	if had {
		if st.PolicyHash != ph {
			return nil, reject(verify.CodeUnauthorized, "replica set %s runs policy %s, not %s", set, st.PolicyHash, ph)
		}
		var names []string
		for _, m := range st.Members {
			names = append(names, m.Node)
		}
		if !slices.Equal(names, members) {
			return nil, reject(verify.CodeUnauthorized, "replica set %s has members %v, not %v", set, names, members)
		}
	} else {
		if st, rej = newReplicaSet(c, set, ph, members); rej != nil {
			return nil, rej
		}
	}
	i := st.member(self)
	if i < 0 {
		return nil, reject(verify.CodeUnauthorized, "replica set %s: the submitter %s is not one of its members", set, self)
	}
	if st.Members[i].Session != "" {
		return nil, reject(verify.CodeReplay, "replica set %s: node %s joined with session %s (entry %d)", set, self, st.Members[i].Session, st.Members[i].Created)
	}
	st.Members[i].Session, st.Members[i].Created = session, c.index
	return append(ws, putRecord(bucketReplicaSets, []byte(set), st)), nil
}

// newReplicaSet checks a new set's members: at least two, registered,
// each for an organisation, no organisation twice.
func newReplicaSet(c *ruleCtx, set, policyHash string, members []string) (*ReplicaSet, *verify.RejectedError) {
	if len(members) < 2 {
		return nil, reject(verify.CodeMalformed, "replica set %s: %d members; a replica set has at least 2", set, len(members))
	}
	st := &ReplicaSet{Set: set, PolicyHash: policyHash}
	orgs := map[string]string{}
	for _, m := range members {
		pk, err := protocol.ParseEd25519Key(m)
		if err != nil {
			return nil, reject(verify.CodeMalformed, "replica set %s: member %.80q: %v", set, m, err)
		}
		if st.member(m) >= 0 {
			return nil, reject(verify.CodeMalformed, "replica set %s: node %s is named twice", set, m)
		}
		reg, ok := getU64(c.v.get(bucketNodes, pk))
		if !ok {
			return nil, reject(verify.CodeMissingReference, "replica set %s: member %s is not a registered node", set, m)
		}
		_, org := parseNodeInfo(c.v.get(bucketNodeInfo, pk))
		if org == nil {
			return nil, reject(verify.CodeUnauthorized, "replica set %s: node %s is registered for no organisation; replicas are counted by organisation", set, m)
		}
		o := protocol.FormatEd25519Key(ed25519.PublicKey(org))
		if other, dup := orgs[o]; dup {
			return nil, reject(verify.CodeUnauthorized, "replica set %s: nodes %s and %s are both run by organisation %s; one organisation is one replica", set, other, m, o)
		}
		orgs[o] = m
		st.Members = append(st.Members, ReplicaMember{Node: m, Organisation: o, Registered: reg})
	}
	return st, nil
}

func (c *ruleCtx) replicaSet(set string) (*ReplicaSet, *verify.RejectedError) {
	st, ok := getRecord[ReplicaSet](c.v, bucketReplicaSets, []byte(set))
	if !ok {
		return nil, reject(verify.CodeMissingReference, "%s: no replica set %.40q on the ledger", c.body.kind, set)
	}
	return st, nil
}

func ruleReplicaResult(c *ruleCtx) ([]write, *verify.RejectedError) {
	b := c.body
	if rej := b.only("set", "session", "policy_hash", "digest", "session_key", "signature"); rej != nil {
		return nil, rej
	}
	if rej := c.requireNode(); rej != nil {
		return nil, rej
	}
	set, rej := b.str("set", true, 2*protocol.SessionIDSize)
	if rej != nil {
		return nil, rej
	}
	session, rej := b.str("session", true, 128)
	if rej != nil {
		return nil, rej
	}
	ph, rej := b.hash("policy_hash", true)
	if rej != nil {
		return nil, rej
	}
	digest, rej := b.hash("digest", true)
	if rej != nil {
		return nil, rej
	}
	var key, sig []byte
	if json.Unmarshal(b.fields["session_key"], &key) != nil || len(key) == 0 || len(key) > 512 {
		return nil, reject(verify.CodeMalformed, "replica.result body session_key: want the base64 of a DER public key")
	}
	if json.Unmarshal(b.fields["signature"], &sig) != nil || len(sig) == 0 || len(sig) > 512 {
		return nil, reject(verify.CodeMalformed, "replica.result body signature: want base64")
	}
	st, rej := c.replicaSet(set)
	if rej != nil {
		return nil, rej
	}
	self := protocol.FormatEd25519Key(c.pub)
	i := st.member(self)
	switch {
	case i < 0:
		return nil, reject(verify.CodeUnauthorized, "replica.result: node %s is not a member of replica set %s", self, set)
	case st.Members[i].Session != session:
		return nil, reject(verify.CodeMissingReference, "replica.result: node %s joined replica set %s with session %q, not %q", self, set, st.Members[i].Session, session)
	case st.PolicyHash != ph:
		return nil, reject(verify.CodeMalformed, "replica.result: replica set %s runs policy %s, not %s", set, st.PolicyHash, ph)
	case st.Members[i].Result != 0:
		return nil, reject(verify.CodeReplay, "replica.result: node %s committed its result for set %s in entry %d", self, set, st.Members[i].Result)
	}
	if err := protocol.VerifyReplicaResult(key, sig, set, session, ph, digest); err != nil {
		return nil, reject(verify.CodeBadSignature, "replica.result: %v", err)
	}
	st.Members[i].Result, st.Members[i].Digest = c.index, digest
	return []write{putRecord(bucketReplicaSets, []byte(set), st)}, nil
}

func ruleReplicaDiscrepancy(c *ruleCtx) ([]write, *verify.RejectedError) {
	b := c.body
	if rej := b.only("set", "results"); rej != nil {
		return nil, rej
	}
	set, rej := b.str("set", true, 2*protocol.SessionIDSize)
	if rej != nil {
		return nil, rej
	}
	var results map[string]string
	if json.Unmarshal(b.fields["results"], &results) != nil || len(results) > MaxReplicaMembers {
		return nil, reject(verify.CodeMalformed, "replica.discrepancy body results: want an object of node → digest")
	}
	st, rej := c.replicaSet(set)
	if rej != nil {
		return nil, rej
	}
	self := protocol.FormatEd25519Key(c.pub)
	if st.member(self) < 0 && !isCurrentMember(c.v, c.pub) {
		return nil, reject(verify.CodeUnauthorized, "replica.discrepancy: the submitter is neither a member of replica set %s nor a consortium member", set)
	}
	if st.Discrepancy != 0 {
		return nil, reject(verify.CodeReplay, "replica.discrepancy: set %s's discrepancy is entry %d", set, st.Discrepancy)
	}
	if !st.Disagreeing() {
		return nil, reject(verify.CodeMissingReference, "replica.discrepancy: the results recorded for set %s do not disagree", set)
	}
	want := map[string]string{}
	for _, m := range st.Members {
		if m.Result != 0 {
			want[m.Node] = m.Digest
		}
	}
	if !mapsEqual(want, results) {
		return nil, reject(verify.CodeMalformed, "replica.discrepancy: results must be the set's recorded results %v", want)
	}
	st.Discrepancy = c.index
	return []write{putRecord(bucketReplicaSets, []byte(set), st)}, nil
}

func jsonIndex(i uint64) string { return strconv.FormatUint(i, 10) }

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// ReplicaSetView is GET /v1/replicas/{set}: the set, and the entries a
// reader checks it with (each by index, raw as signed): every member's
// node.registered, session.created and replica.result, and the
// discrepancy.
type ReplicaSetView struct {
	Height  int64                      `json:"height"`
	Set     ReplicaSet                 `json:"replica_set"`
	Entries map[string]json.RawMessage `json:"entries"` // decimal index -> entry
}

func (ln *ledgerNode) handleReplicaSet(w http.ResponseWriter, req *http.Request) {
	set := req.PathValue("set")
	if protocol.ValidSessionID(set) != nil {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "replica set id: want %d lower-case hex digits", 2*protocol.SessionIDSize)
		return
	}
	ln.read(w, func(w http.ResponseWriter, rd reader, st committedState) error {
		raw := rd.get(bucketReplicaSets, []byte(set))
		var rs ReplicaSet
		if raw == nil || json.Unmarshal(raw, &rs) != nil {
			writeError(w, http.StatusNotFound, verify.CodeNotFound, "no replica set %s", set)
			return nil
		}
		out := ReplicaSetView{Height: st.Height, Set: rs, Entries: map[string]json.RawMessage{}}
		add := func(i uint64) {
			if i == 0 || i >= st.Size {
				return
			}
			if _, tx, ok := rd.entry(i); ok {
				out.Entries[jsonIndex(i)] = bytes.Clone(tx)
			}
		}
		for _, m := range rs.Members {
			add(m.Registered)
			add(m.Created)
			add(m.Result)
		}
		add(rs.Discrepancy)
		writeJSON(w, http.StatusOK, out)
		return nil
	})
}
