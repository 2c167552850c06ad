package federation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// The outbox (decision 0125): a holder releases a result as soon as the
// call's receipt is signed and on its disk, and commits receipts to the
// ledger in the background, in batches. The receipt is on disk first as
// a record of the call log (calllog.go, decision 0168), which claims the
// call id; then in its file, written with NoReplace, which guards it from
// then on: a call id answered before is refused without the ledger.
// After a crash, every receipt not yet marked committed is sent again.
//
//	receipts/ID          the signed model.called entry
//	receipts/ID.index    its index on the ledger, once committed
//	receipts/ID.refused  the ledger's refusal, if it refused it

// PathReceipts+ID tells where a call's receipt stands (ReceiptStatus).
const PathReceipts = "/v1/federation/receipts/"

// Receipt states.
const (
	ReceiptPending   = "pending"
	ReceiptCommitted = "committed"
	ReceiptRefused   = "refused"
)

// ReceiptStatus is what PathReceipts answers.
type ReceiptStatus struct {
	Call   string `json:"call"`
	State  string `json:"state"`
	Index  uint64 `json:"index,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Bounds of the outbox.
const (
	outboxBatch = 200
	// outboxGather is how long a receipt waits, once queued, for others
	// to join its batch (decision 0168): the reply it came with reaches
	// its caller meanwhile, before the ledger makes the block (in a node
	// with an embedded ledger, a block's work in the same process held
	// the reply's delivery up by 10–13 ms p50), and receipts queued
	// close together share a block.
	outboxGather = 25 * time.Millisecond
	// keptCommitted is how long a committed receipt's file stays as the
	// replay guard: longer than a call's signed time may lie in the past.
	keptCommitted = 2*MaxSkew + time.Minute
)

type outbox struct {
	dir    string
	ledger Ledger
	log    *slog.Logger

	mu      sync.Mutex
	pending map[string]*verify.SignedEntry
	// logged are the calls whose receipts are in the call log and not
	// yet in their files: answered all the same (calllog.go).
	logged map[string]bool
	wake   chan struct{}
	stop   context.CancelFunc
	done   chan struct{}
}

func openOutbox(dir string, l Ledger, log *slog.Logger) (*outbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ob := &outbox{dir: dir, ledger: l, log: log, pending: map[string]*verify.SignedEntry{}, logged: map[string]bool{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	for _, e := range ents {
		id := e.Name()
		if len(id) != 64 {
			continue
		}
		st := ob.status(id)
		if st.State == ReceiptPending {
			b, err := os.ReadFile(filepath.Join(dir, id))
			if err != nil {
				return nil, err
			}
			se, err := verify.DecodeEntry(b)
			if err != nil {
				return nil, fmt.Errorf("receipt %s: %w", id, err)
			}
			ob.pending[id] = se
			continue
		}
		if info, err := e.Info(); err == nil && now.Sub(info.ModTime()) > keptCommitted {
			ob.forget(id)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	ob.stop = cancel
	go ob.commit(ctx)
	if len(ob.pending) > 0 {
		ob.kick()
	}
	return ob, nil
}

func (ob *outbox) close() {
	ob.stop()
	<-ob.done
}

func (ob *outbox) path(id string) string { return filepath.Join(ob.dir, id) }

// seen says whether call id was answered (its receipt kept) before.
func (ob *outbox) seen(id string) bool {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return ob.seenLocked(id)
}

func (ob *outbox) seenLocked(id string) bool {
	if ob.logged[id] {
		return true
	}
	_, err := os.Lstat(ob.path(id))
	return err == nil
}

// claim marks call id as answered, for a record of the call log; false
// if it was answered before. Of calls with the same id made at the same
// time, one claims it.
func (ob *outbox) claim(id string) bool {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if ob.seenLocked(id) {
		return false
	}
	ob.logged[id] = true
	return true
}

// unclaim forgets a claim once the receipt's file is written.
func (ob *outbox) unclaim(id string) {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	delete(ob.logged, id)
}

// keep writes the receipt of call id (its signed entry, encoded) to its
// file; errReplayed if the file exists. The receipt goes to the ledger
// once send is called.
func (ob *outbox) keep(id string, entry []byte) error {
	if err := atomicfile.WriteFile(ob.path(id), entry, 0o600, atomicfile.NoReplace()); err != nil {
		if errors.Is(err, os.ErrExist) {
			return errReplayed
		}
		return err
	}
	return nil
}

// send queues a kept receipt for the ledger.
func (ob *outbox) send(id string, se *verify.SignedEntry) {
	ob.mu.Lock()
	ob.pending[id] = se
	ob.mu.Unlock()
	ob.kick()
}

var errReplayed = errors.New("this call id was answered before: a replayed call")

func (ob *outbox) kick() {
	select {
	case ob.wake <- struct{}{}:
	default:
	}
}

// status reads where call id's receipt stands.
func (ob *outbox) status(id string) ReceiptStatus {
	if b, err := os.ReadFile(ob.path(id) + ".index"); err == nil {
		n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		return ReceiptStatus{Call: id, State: ReceiptCommitted, Index: n}
	}
	if b, err := os.ReadFile(ob.path(id) + ".refused"); err == nil {
		return ReceiptStatus{Call: id, State: ReceiptRefused, Reason: string(b)}
	}
	if ob.seen(id) {
		return ReceiptStatus{Call: id, State: ReceiptPending}
	}
	return ReceiptStatus{Call: id}
}

func (ob *outbox) forget(id string) {
	for _, s := range []string{"", ".index", ".refused"} {
		os.Remove(ob.path(id) + s)
	}
}

// replayedAt finds the index the ledger names when it refuses a receipt
// it already holds (sent again after a crash).
var replayedAt = regexp.MustCompile(`has its receipt in entry ([0-9]+)`)

// commit sends the pending receipts in batches until stopped; a batch
// that fails in transit is sent again after a pause.
func (ob *outbox) commit(ctx context.Context) {
	defer close(ob.done)
	lastPrune := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ob.wake:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(outboxGather):
		}
		for {
			ob.mu.Lock()
			ids := make([]string, 0, min(len(ob.pending), outboxBatch))
			batch := make([]*verify.SignedEntry, 0, cap(ids))
			for id, se := range ob.pending {
				if len(ids) == outboxBatch {
					break
				}
				ids, batch = append(ids, id), append(batch, se)
			}
			ob.mu.Unlock()
			if len(ids) == 0 {
				break
			}
			res, err := ob.ledger.AppendBatch(ctx, batch, true)
			if err != nil {
				ob.log.Warn("federation: committing receipts", "receipts", len(ids), "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
				continue
			}
			settled := 0
			for i, r := range res {
				if ob.settle(ids[i], r.Receipt.Index, r.Err) {
					settled++
				}
			}
			if settled < len(ids) {
				// Some were not admitted (a full mempool, a timeout):
				// send them again after a pause, not at once.
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
		}
		if time.Since(lastPrune) > keptCommitted {
			ob.prune()
			lastPrune = time.Now()
		}
	}
}

// settle records the ledger's answer for call id; false if the receipt
// stays pending (to be sent again).
func (ob *outbox) settle(id string, index uint64, err error) bool {
	var rej *verify.RejectedError
	switch {
	case err == nil:
	case errors.As(err, &rej) && rej.Code == verify.CodeReplay && replayedAt.MatchString(rej.Reason):
		index, _ = strconv.ParseUint(replayedAt.FindStringSubmatch(rej.Reason)[1], 10, 64)
	case errors.As(err, &rej):
		ob.log.Error("federation: the ledger refused a released call's receipt", "call", id, "code", rej.Code, "reason", rej.Reason)
		if werr := atomicfile.WriteFile(ob.path(id)+".refused", []byte(rej.Reason), 0o600); werr != nil {
			return false // still pending: sent again
		}
		ob.done1(id)
		return true
	default:
		return false // not admitted: still pending, sent again
	}
	if werr := atomicfile.WriteFile(ob.path(id)+".index", []byte(strconv.FormatUint(index, 10)), 0o600); werr != nil {
		ob.log.Warn("federation: recording a committed receipt", "call", id, "err", werr)
		return false
	}
	ob.done1(id)
	return true
}

func (ob *outbox) done1(id string) {
	ob.mu.Lock()
	delete(ob.pending, id)
	ob.mu.Unlock()
}

// prune forgets committed receipts older than keptCommitted: a replay of
// their calls is refused by its signed time.
func (ob *outbox) prune() {
	ents, err := os.ReadDir(ob.dir)
	if err != nil {
		return
	}
	now := time.Now()
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".index")
		if !ok {
			continue
		}
		if info, err := e.Info(); err == nil && now.Sub(info.ModTime()) > keptCommitted {
			ob.forget(id)
		}
	}
}

func (h *Holder) handleReceipt(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		refuse(w, CodeBadRequest, "receipt: want a call id (64 hex digits)")
		return
	}
	st := h.outbox.status(id)
	if st.State == "" {
		refuse(w, CodeNotServed, "receipt: this node answered no call %s (or forgot it: see the ledger)", id)
		return
	}
	writeJSON(w, http.StatusOK, st)
}
