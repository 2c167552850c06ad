package node

import (
	"encoding/hex"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
)

// closedSet is what the node remembers of closed sessions: when and by
// whom, by session id, at most maxClosedKept of them (decision 0064).
// Each is kept in about 50 bytes (the id as its 16 bytes, the time as
// nanoseconds, the closer's name shared with the other closes by the same
// name) rather than as a whole tombstone, so that the bound costs the
// node well under a megabyte. Callers hold n.mu.
type closedSet struct {
	m      map[[protocol.SessionIDSize]byte]closedInfo
	intern map[string]string
}

type closedInfo struct {
	at int64 // Unix nanoseconds
	by string
}

// maxInterned bounds the closers' names shared among closes; past it each
// close keeps its own copy (names such as a sweep's reason vary).
const maxInterned = 1024

func newClosedSet() closedSet {
	return closedSet{m: map[[protocol.SessionIDSize]byte]closedInfo{}, intern: map[string]string{}}
}

func closedKey(id string) (k [protocol.SessionIDSize]byte, ok bool) {
	if len(id) != 2*protocol.SessionIDSize {
		return k, false
	}
	_, err := hex.Decode(k[:], []byte(id))
	return k, err == nil
}

func (c *closedSet) add(ts tombstone) {
	k, ok := closedKey(ts.ID)
	if !ok {
		return
	}
	by, ok := c.intern[ts.By]
	if !ok {
		by = ts.By
		if len(c.intern) < maxInterned {
			c.intern[by] = by
		}
	}
	c.m[k] = closedInfo{at: ts.Closed.UnixNano(), by: by}
}

func (c *closedSet) get(id string) (tombstone, bool) {
	k, ok := closedKey(id)
	if !ok {
		return tombstone{}, false
	}
	ci, ok := c.m[k]
	if !ok {
		return tombstone{}, false
	}
	return tombstone{ID: id, Closed: time.Unix(0, ci.at).UTC(), By: ci.by}, true
}

func (c *closedSet) has(id string) bool {
	k, ok := closedKey(id)
	if !ok {
		return false
	}
	_, ok = c.m[k]
	return ok
}

func (c *closedSet) len() int { return len(c.m) }

// all returns every close remembered, in no order.
func (c *closedSet) all() []tombstone {
	out := make([]tombstone, 0, len(c.m))
	for k, ci := range c.m {
		out = append(out, tombstone{ID: hex.EncodeToString(k[:]), Closed: time.Unix(0, ci.at).UTC(), By: ci.by})
	}
	return out
}

func (c *closedSet) remove(id string) {
	if k, ok := closedKey(id); ok {
		delete(c.m, k)
	}
}
