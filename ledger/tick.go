package ledger

import (
	"encoding/binary"
	"time"
)

// A tick is a transaction that only asks for a block. A checkpoint of the
// tree after block h is signed in the votes of h+1 and published in block
// h+2 (see checkpoint.go); when the entries stop, CometBFT still makes
// h+1 at once (the app hash changed) but would wait for the next entry, or
// for the empty-block interval, before h+2. So after each commit that
// leaves the latest tree without a published checkpoint, every validator
// puts the same tick, 0x01 || committed height, into its mempool: the
// chain makes the block that publishes the checkpoint right away, and an
// idle chain makes no blocks at all besides the periodic empty one.
//
// A tick is not a log entry and not a leaf. CheckTx accepts only the tick
// for the current height while a checkpoint is pending, so peers cannot
// flood the mempool with them; a block may carry any well-formed tick (a
// stale one is harmless) and FinalizeBlock ignores them.

const (
	tickTxPrefix = 0x01
	tickTxLen    = 9
)

func tickTx(height int64) []byte {
	tx := make([]byte, tickTxLen)
	tx[0] = tickTxPrefix
	binary.BigEndian.PutUint64(tx[1:], uint64(height))
	return tx
}

func isTickTx(tx []byte) bool { return len(tx) > 0 && tx[0] == tickTxPrefix }

func parseTickTx(tx []byte) (int64, bool) {
	if len(tx) != tickTxLen || tx[0] != tickTxPrefix {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(tx[1:])), true
}

// checkpointPending reports whether the committed tree still lacks a
// published checkpoint (sizes only grow, so equal size means same tree).
func (st committedState) checkpointPending() bool {
	return !st.HasCheckpoint || st.CheckpointSize != st.Size
}

// tickRequest asks for the tick of height after delay.
type tickRequest struct {
	height int64
	delay  time.Duration
}

// beaconTickDelay spaces the blocks an epoch waiting for its VRF beacon
// asks for: a beacon needs a proposer holding enough validators' shares,
// which may take a few blocks (or never come, while too many withhold),
// and an idle chain makes no other block (decision 0157).
const beaconTickDelay = time.Second

// tickWanted reports whether a block is wanted after committing st, and
// after what delay: at once while a checkpoint is pending, spaced while a
// PIEE epoch waits for its beacon.
func (a *app) tickWanted(st committedState) (time.Duration, bool) {
	if st.checkpointPending() {
		return tickDelay, true
	}
	if _, _, ok := a.pendingVRF(st.Height + 1); ok {
		return beaconTickDelay, true
	}
	return 0, false
}

// signalTick asks the node's tick loop to submit the tick for height
// after delay, replacing an older request not yet taken.
func (a *app) signalTick(height int64, delay time.Duration) {
	for {
		select {
		case a.ticks <- tickRequest{height, delay}:
			return
		default:
		}
		select {
		case <-a.ticks:
		default:
		}
	}
}

// tickDelay is how long the tick loop waits for the chain to move by
// itself: while entries keep coming, blocks come anyway and a tick would
// only cut them short.
const tickDelay = 50 * time.Millisecond

// tickLoop submits the ticks the app asks for, once the chain has had
// tickDelay to move on by itself and the mempool is empty, until quit is
// closed. It runs apart from Commit: the mempool is locked while the app
// commits.
func (ln *ledgerNode) tickLoop(quit <-chan struct{}) {
	var height int64
	var due <-chan time.Time
	for {
		select {
		case req := <-ln.app.ticks:
			height, due = req.height, time.After(req.delay)
		case <-due:
			due = nil
			if ln.node.IsRunning() && ln.node.Mempool().Size() == 0 {
				// Refusals are expected (a newer block came first).
				ln.node.Mempool().CheckTx(tickTx(height), "")
			}
		case <-quit:
			return
		}
	}
}
