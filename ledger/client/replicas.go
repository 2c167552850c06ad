package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// ReplicaMember is one node of a replica set, as read from the entries
// that VerifiedReplicaSet checked.
type ReplicaMember struct {
	Node         string `json:"node"`
	Organisation string `json:"organisation"`
	Class        string `json:"class"`
	Endpoint     string `json:"endpoint,omitempty"` // the ledger's reading: nodes move
	Session      string `json:"session,omitempty"`
	Created      uint64 `json:"created,omitempty"`
	Result       uint64 `json:"result,omitempty"`
	Digest       string `json:"digest,omitempty"`
	// SessionKey and Signature are the replica.result's.
	SessionKey []byte `json:"session_key,omitempty"`
	Signature  []byte `json:"signature,omitempty"`
}

// ReplicaSet is a replica set: every member read from its own entries.
type ReplicaSet struct {
	Set         string          `json:"set"`
	PolicyHash  string          `json:"policy_hash"`
	Members     []ReplicaMember `json:"members"`
	Discrepancy uint64          `json:"discrepancy,omitempty"`
	// Verified says every entry was checked included in a checkpoint
	// that validators signed (VerifiedReplicaSet); false from ReplicaSet.
	Verified bool `json:"verified"`
}

// Agreed reports whether every member committed the same digest.
func (s *ReplicaSet) Agreed() bool {
	for _, m := range s.Members {
		if m.Result == 0 || m.Digest != s.Members[0].Digest {
			return false
		}
	}
	return len(s.Members) > 0
}

// Groups maps each committed digest to the members that committed it.
func (s *ReplicaSet) Groups() map[string][]string {
	g := map[string][]string{}
	for _, m := range s.Members {
		if m.Result != 0 {
			g[m.Digest] = append(g[m.Digest], m.Node)
		}
	}
	return g
}

// ErrNoReplicaSet: the ledger has no such replica set (yet).
var ErrNoReplicaSet = errors.New("no such replica set on the ledger")

type replicaView struct {
	Height int64 `json:"height"`
	Set    struct {
		Set         string `json:"set"`
		PolicyHash  string `json:"policy_hash"`
		Discrepancy uint64 `json:"discrepancy"`
		Members     []struct {
			Node         string `json:"node"`
			Organisation string `json:"organisation"`
			Registered   uint64 `json:"registered"`
			Session      string `json:"session"`
			Created      uint64 `json:"created"`
			Result       uint64 `json:"result"`
			Digest       string `json:"digest"`
		} `json:"members"`
	} `json:"replica_set"`
	Entries map[string]json.RawMessage `json:"entries"`
}

const maxReplicaJSON = 4 << 20

// ReplicaSet fetches replica set id and reads every member from the
// signed entries the server lists with it: each entry's signature,
// kind and submitter are checked here, so the server cannot forge a
// member, a session or a digest; that the entries are in the log is
// VerifiedReplicaSet's check.
func (c *Client) ReplicaSet(ctx context.Context, id string) (*ReplicaSet, map[uint64][]byte, error) {
	b, err := c.do(ctx, "GET", "/v1/replicas/"+id, nil, nil, maxReplicaJSON, false)
	if err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Code == verify.CodeNotFound {
			return nil, nil, fmt.Errorf("replica set %s: %w", id, ErrNoReplicaSet)
		}
		return nil, nil, err
	}
	var v replicaView
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, nil, malformed("replica set: %v", err)
	}
	if v.Set.Set != id {
		return nil, nil, malformed("replica set: asked for %s, got %q", id, v.Set.Set)
	}
	txs := map[uint64][]byte{}
	entry := func(i uint64, kind verify.Kind, submitter string) (map[string]json.RawMessage, error) {
		raw, ok := v.Entries[strconv.FormatUint(i, 10)]
		if !ok {
			return nil, malformed("replica set %s: entry %d is not served", id, i)
		}
		se, err := verify.DecodeEntry(raw)
		if err != nil {
			return nil, malformed("replica set %s: entry %d: %v", id, i, err)
		}
		if err := se.VerifySignature(); err != nil {
			return nil, malformed("replica set %s: entry %d: %v", id, i, err)
		}
		if se.Entry.Kind != kind || se.Entry.Submitter != submitter {
			return nil, malformed("replica set %s: entry %d is %s by %s, not %s by %s", id, i, se.Entry.Kind, se.Entry.Submitter, kind, submitter)
		}
		var body map[string]json.RawMessage
		if err := json.Unmarshal(se.Entry.Body, &body); err != nil {
			return nil, malformed("replica set %s: entry %d body: %v", id, i, err)
		}
		txs[i] = raw
		return body, nil
	}
	str := func(body map[string]json.RawMessage, k string) string {
		var s string
		_ = json.Unmarshal(body[k], &s)
		return s
	}
	out := &ReplicaSet{Set: id, PolicyHash: v.Set.PolicyHash, Discrepancy: v.Set.Discrepancy}
	var names []string
	for _, m := range v.Set.Members {
		names = append(names, m.Node)
	}
	for _, m := range v.Set.Members {
		rm := ReplicaMember{Node: m.Node}
		reg, err := entry(m.Registered, "node.registered", m.Node)
		if err != nil {
			return nil, nil, err
		}
		rm.Organisation, rm.Class, rm.Endpoint = str(reg, "organisation"), str(reg, "class"), str(reg, "endpoint")
		if rm.Organisation == "" || rm.Organisation != m.Organisation {
			return nil, nil, malformed("replica set %s: node %s is registered for organisation %q, not %q", id, m.Node, rm.Organisation, m.Organisation)
		}
		if m.Created != 0 {
			cr, err := entry(m.Created, "session.event", m.Node)
			if err != nil {
				return nil, nil, err
			}
			var members []string
			_ = json.Unmarshal(cr["replica_members"], &members)
			if str(cr, "event") != "session.created" || str(cr, "replica_set") != id || str(cr, "policy_hash") != out.PolicyHash ||
				str(cr, "session") != m.Session || !slices.Equal(members, names) {
				return nil, nil, malformed("replica set %s: entry %d does not create node %s's session %s in this set", id, m.Created, m.Node, m.Session)
			}
			rm.Session, rm.Created = m.Session, m.Created
		}
		if m.Result != 0 {
			res, err := entry(m.Result, "replica.result", m.Node)
			if err != nil {
				return nil, nil, err
			}
			_ = json.Unmarshal(res["session_key"], &rm.SessionKey)
			_ = json.Unmarshal(res["signature"], &rm.Signature)
			rm.Digest, rm.Result = str(res, "digest"), m.Result
			if str(res, "set") != id || str(res, "session") != rm.Session || str(res, "policy_hash") != out.PolicyHash {
				return nil, nil, malformed("replica set %s: entry %d is not node %s's result in this set", id, m.Result, m.Node)
			}
			if err := protocol.VerifyReplicaResult(rm.SessionKey, rm.Signature, id, rm.Session, out.PolicyHash, rm.Digest); err != nil {
				return nil, nil, malformed("replica set %s: entry %d: %v", id, m.Result, err)
			}
		}
		out.Members = append(out.Members, rm)
	}
	if out.Discrepancy != 0 {
		if _, ok := v.Entries[strconv.FormatUint(out.Discrepancy, 10)]; ok {
			txs[out.Discrepancy] = v.Entries[strconv.FormatUint(out.Discrepancy, 10)]
		}
	}
	return out, txs, nil
}

// VerifiedReplicaSet is ReplicaSet, with every entry it was read from
// checked as Verify checks an entry: the checkpoint signed by the
// validator set followed from the pinned genesis (the state file at
// statePath, "" for the default), each entry's inclusion proof in it.
// An entry newer than the latest checkpoint counts as not there yet: its
// member has not joined or committed, the discrepancy is unknown (try
// again shortly).
func (c *Client) VerifiedReplicaSet(ctx context.Context, statePath, id string) (*ReplicaSet, error) {
	rs, txs, err := c.ReplicaSet(ctx, id)
	if err != nil {
		return nil, err
	}
	res, err := c.Verify(ctx, statePath, nil)
	if err != nil {
		return nil, err
	}
	// What the latest checkpoint does not cover yet counts as not there:
	// a result is pending, a discrepancy unknown, until it is.
	size := res.Checkpoint.Size
	for i := range rs.Members {
		m := &rs.Members[i]
		if m.Result >= size {
			m.Result, m.Digest, m.SessionKey, m.Signature = 0, "", nil, nil
		}
		if m.Created >= size {
			m.Created, m.Session = 0, ""
		}
	}
	if rs.Discrepancy >= size {
		rs.Discrepancy = 0
	}
	for i, tx := range txs {
		if i >= size {
			continue
		}
		e, err := c.verifyEntry(ctx, res.Checkpoint, i)
		if err != nil {
			return nil, err
		}
		if string(e.Tx) != string(tx) {
			return nil, verr(verify.ErrNotIncluded, "replica set %s: entry %d in the log is not the one served with the set", id, i)
		}
	}
	rs.Verified = true
	return rs, nil
}

// Disagreement names, for a set whose committed digests differ, which
// replicas (node and organisation) hold which digest, the largest group
// first; nil when they do not differ.
func (s *ReplicaSet) Disagreement() error {
	groups := s.Groups()
	if len(groups) < 2 {
		return nil
	}
	digests := make([]string, 0, len(groups))
	for d := range groups {
		digests = append(digests, d)
	}
	slices.SortFunc(digests, func(a, b string) int {
		if c := len(groups[b]) - len(groups[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	org := map[string]string{}
	for _, m := range s.Members {
		org[m.Node] = m.Organisation
	}
	var parts []string
	for _, d := range digests {
		var who []string
		for _, n := range groups[d] {
			who = append(who, fmt.Sprintf("%s (organisation %s)", n, org[n]))
		}
		parts = append(parts, fmt.Sprintf("digest %.16s… from %s", d, strings.Join(who, ", ")))
	}
	return fmt.Errorf("%w: replica set %s: %s", ErrReplicasDisagree, s.Set, strings.Join(parts, "; "))
}

// ErrReplicasDisagree: a replica set's committed results differ.
var ErrReplicasDisagree = errors.New("the replicas disagree")
