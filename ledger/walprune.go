package ledger

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// CometBFT's consensus write-ahead log (data/cs.wal/wal) is written in
// 10 MB chunks (wal.000, wal.001, …, then the head, wal), and CometBFT
// keeps up to 1 GB of them: every block's parts and every vote, about
// 400 bytes per committed entry, a copy of what the block store already
// holds. The log is read only after a crash, to replay the height in
// progress, from the last "end of height" marker: the head and the newest
// chunks. walKeep chunks (each at least 10 MB, more than twice the
// largest block the ledger makes: the last marker is always in the head
// or the newest chunk) are kept; older ones are removed. CometBFT's group
// reads its directory at each check, so removing its oldest files is what
// it does itself when it reaches its size limit. (Two since decision
// 0175: under a high write rate a chunk grows well past 10 MB before
// CometBFT rotates it, and a third was only a copy of pruned blocks.)
const (
	walKeep      = 2
	walPruneTick = 10 * time.Second
)

// pruneWAL removes all but the newest keep numbered chunks of the
// write-ahead log whose head is head; it returns how many it removed.
func pruneWAL(head string, keep int) (int, error) {
	dir, base := filepath.Dir(head), filepath.Base(head)
	names, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return 0, nil
		}
		return 0, err
	}
	type chunk struct {
		n    int
		name string
	}
	var chunks []chunk
	for _, e := range names {
		// CometBFT names chunks head.NNN, at least three digits.
		suffix, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok || len(suffix) < 3 {
			continue
		}
		if n, err := strconv.Atoi(suffix); err == nil && n >= 0 {
			chunks = append(chunks, chunk{n, e.Name()})
		}
	}
	if len(chunks) <= keep {
		return 0, nil
	}
	slices.SortFunc(chunks, func(a, b chunk) int { return a.n - b.n })
	removed := 0
	for _, c := range chunks[:len(chunks)-keep] {
		if err := os.Remove(filepath.Join(dir, c.name)); err != nil && !os.IsNotExist(err) {
			return removed, err
		}
		removed++
	}
	return removed, nil
}

// walLoop prunes the write-ahead log every walPruneTick until quit.
func (ln *ledgerNode) walLoop(head string, quit <-chan struct{}) {
	t := time.NewTicker(walPruneTick)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if _, err := pruneWAL(head, walKeep); err != nil {
				ln.app.logger.Error("ledger: consensus WAL chunks not removed", "err", err)
			}
		case <-quit:
			return
		}
	}
}
