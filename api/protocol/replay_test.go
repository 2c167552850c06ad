package protocol

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestReplayWindow(t *testing.T) {
	w := NewReplayWindow(3)
	t0 := time.Unix(1_800_000_000, 0)
	a, b := []byte("key-a"), []byte("key-b")
	n := []byte("0123456789abcdef")

	if err := w.Admit(a, n, t0); err != nil {
		t.Fatalf("first use refused: %v", err)
	}
	var re *ReplayError
	if err := w.Admit(a, n, t0.Add(time.Second)); !errors.As(err, &re) || re.Full {
		t.Fatalf("replay within the window: got %v, want a replay refusal", err)
	}
	// The same nonce under another scope is another request.
	if err := w.Admit(b, n, t0.Add(time.Second)); err != nil {
		t.Fatalf("same nonce, other signer: %v", err)
	}
	// Scope and nonce are length-delimited: ("key-a", "x…") is not ("key-ax", "…").
	if err := w.Admit([]byte("key-a0"), n[1:], t0); err != nil {
		t.Fatalf("shifted scope/nonce boundary taken for a replay: %v", err)
	}
	if err := w.Admit(a, []byte("another nonce 16"), t0.Add(2*time.Second)); !errors.As(err, &re) || !re.Full {
		t.Fatalf("fourth nonce in a window of 3: got %v, want the window full", err)
	}
	// Still remembered one tick before ReplayMemory has passed…
	if err := w.Admit(a, n, t0.Add(ReplayMemory)); err == nil {
		t.Fatal("nonce forgotten before ReplayMemory passed")
	}
	// …and forgotten after it, freeing its slot.
	if err := w.Admit(a, n, t0.Add(ReplayMemory+time.Nanosecond)); err != nil {
		t.Fatalf("after ReplayMemory: %v", err)
	}
}

// TestReplayWindowMemoryFollowsRate shows memory follows the rate of the
// last ReplayMemory: a long run at a steady rate holds one window's worth.
func TestReplayWindowMemoryFollowsRate(t *testing.T) {
	w := NewReplayWindow(1 << 20)
	t0 := time.Unix(1_800_000_000, 0)
	const perSecond = 20
	for i := range 3 * int(ReplayMemory/time.Second) * perSecond {
		now := t0.Add(time.Duration(i) * time.Second / perSecond)
		if err := w.Admit([]byte("k"), fmt.Appendf(nil, "nonce-%016d", i), now); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := w.Len(), int(ReplayMemory/time.Second)*perSecond+1; got != want {
		t.Fatalf("after three windows at %d/s the window holds %d nonces, want %d", perSecond, got, want)
	}
	if len(w.queue) > 2*w.Len()+1024 {
		t.Fatalf("queue of %d slots for %d nonces: not compacted", len(w.queue), w.Len())
	}
}

func TestReplayWindowClockStepsBack(t *testing.T) {
	w := NewReplayWindow(10)
	t0 := time.Unix(1_800_000_000, 0)
	n1, n2 := []byte("nonce-one-16byte"), []byte("nonce-two-16byte")
	if err := w.Admit(nil, n1, t0); err != nil {
		t.Fatal(err)
	}
	if err := w.Admit(nil, n2, t0.Add(-time.Hour)); err != nil { // the clock stepped back an hour
		t.Fatal(err)
	}
	// n2 expires before n1 but sits behind it: it is remembered until n1 goes.
	if err := w.Admit(nil, n2, t0.Add(ReplayMemory-time.Hour+time.Second)); err == nil {
		t.Fatal("nonce behind an unexpired one was forgotten")
	}
	if err := w.Admit(nil, n1, t0.Add(ReplayMemory+time.Second)); err != nil {
		t.Fatalf("after both expired: %v", err)
	}
}
