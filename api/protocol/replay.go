package protocol

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"time"
)

// ReplayMemory is how long a ReplayWindow remembers a nonce: a request is
// accepted while its timestamp is within MaxRequestSkew of the clock, so a
// nonce first seen at time t could come back until t + 2·MaxRequestSkew.
const ReplayMemory = 2 * MaxRequestSkew

// ReplayWindow remembers the nonces of signed requests for ReplayMemory,
// so that each signed request is accepted at most once. It is the one
// replay cache of the node, its sessions and the blob store.
//
// Memory is bounded by time and by count: nonces are forgotten in arrival
// order as they expire (each Admit forgets what has expired, so memory
// follows the request rate of the last ReplayMemory, not the peak), and at
// most max are held; past that Admit refuses rather than forget a nonce
// early. Each nonce costs a 32-byte digest in a map and a queue slot,
// about 100 bytes.
type ReplayWindow struct {
	mu    sync.Mutex
	max   int
	seen  map[[32]byte]struct{}
	queue []remembered // arrival order; expiries non-decreasing unless the clock stepped back
	head  int
}

type remembered struct {
	id    [32]byte
	until int64 // unix nanoseconds
}

// NewReplayWindow returns a window that holds at most max nonces.
func NewReplayWindow(max int) *ReplayWindow {
	if max < 1 {
		max = 1
	}
	return &ReplayWindow{max: max, seen: map[[32]byte]struct{}{}}
}

// ReplayError is Admit's refusal.
type ReplayError struct {
	// Full is set when the window holds its maximum of nonces (the
	// request may be retried once older ones expire); otherwise the
	// nonce was seen before.
	Full bool
	Max  int
}

func (e *ReplayError) Error() string {
	if e.Full {
		return fmt.Sprintf("%d signed requests were accepted in the last %s, the limit", e.Max, ReplayMemory)
	}
	return "replays a request already seen"
}

// Admit records nonce under scope (for example the signer's key, so that
// two signers' nonces never collide) and returns nil the first time, a
// *ReplayError if the pair was seen within ReplayMemory or the window is
// full. Check the request's signature and timestamp first: only a request
// that would otherwise be accepted may take a slot.
func (w *ReplayWindow) Admit(scope, nonce []byte, now time.Time) error {
	h := sha256.New()
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(scope)))
	h.Write(n[:])
	h.Write(scope)
	h.Write(nonce)
	var id [32]byte
	h.Sum(id[:0])

	w.mu.Lock()
	defer w.mu.Unlock()
	w.forget(now)
	if _, dup := w.seen[id]; dup {
		return &ReplayError{Max: w.max}
	}
	if len(w.seen) >= w.max {
		return &ReplayError{Full: true, Max: w.max}
	}
	w.seen[id] = struct{}{}
	w.queue = append(w.queue, remembered{id: id, until: now.Add(ReplayMemory).UnixNano()})
	return nil
}

// Len is the number of nonces remembered.
func (w *ReplayWindow) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen)
}

// forget drops expired nonces from the front of the queue. A nonce behind
// one that has not expired waits for it (only after the clock stepped
// back), which errs on the side of remembering.
func (w *ReplayWindow) forget(now time.Time) {
	t := now.UnixNano()
	for w.head < len(w.queue) && w.queue[w.head].until < t {
		delete(w.seen, w.queue[w.head].id)
		w.queue[w.head] = remembered{}
		w.head++
	}
	switch {
	case w.head == len(w.queue):
		w.queue, w.head = w.queue[:0], 0
		if cap(w.queue) > 1024 {
			w.queue = nil
			w.seen = map[[32]byte]struct{}{} // a map never shrinks; let a drained one go
		}
	case w.head > len(w.queue)/2 && w.head >= 1024:
		n := copy(w.queue, w.queue[w.head:])
		w.queue, w.head = w.queue[:n], 0
	}
}
