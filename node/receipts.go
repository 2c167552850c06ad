package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/isolate"
)

// receiptsDir, under the data directory, keeps what a closed session's
// receipt needs besides the ledger: closing erases the session's state,
// and with it the policy text and the session's public keys, which the
// ledger holds only as hashes. Everything kept is public material (no
// key, no envelope, no data): the canonical policy, the session's RA-TLS
// certificate and HPKE public key, and the steps with their ledger
// indices. One file per session, <id>.json; the oldest go first past
// maxArchivedReceipts. (docs/decisions/0161-receipts-outlive-sessions.md)
const receiptsDir = "receipts"

// maxArchivedReceipts bounds the closed sessions whose receipt material
// is kept (a policy is at most policy.MaxFileSize, typically a few KiB).
const maxArchivedReceipts = 10000

// archivedReceipt is one file of receiptsDir.
type archivedReceipt struct {
	ReceiptMaterial
	PolicyName string          `json:"policy_name"`
	Events     []EventView     `json:"events"`
	Report     *isolate.Report `json:"report,omitempty"`
	Closed     time.Time       `json:"closed"`
}

// receiptArchive is receiptsDir.
type receiptArchive struct {
	dir  string
	sync bool
	log  *slog.Logger

	mu    sync.Mutex
	count int // files, as of the last listing plus those written since
	max   int
}

func openReceiptArchive(dataDir string, sync bool, log *slog.Logger) (*receiptArchive, error) {
	a := &receiptArchive{dir: filepath.Join(dataDir, receiptsDir), sync: sync, log: log, max: maxArchivedReceipts}
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return nil, fmt.Errorf("receipt archive: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.prune()
	return a, nil
}

func (a *receiptArchive) path(id string) string { return filepath.Join(a.dir, id+".json") }

// keep writes a closing session's receipt material. A failure is logged,
// not returned: the close goes on (its entries are on the ledger
// whatever happens here).
func (a *receiptArchive) keep(r *archivedReceipt) {
	if a == nil {
		return
	}
	b, err := json.Marshal(r)
	if err == nil {
		var opts []atomicfile.Option
		if !a.sync {
			opts = append(opts, atomicfile.NoSync())
		}
		err = atomicfile.WriteFile(a.path(r.Session), b, 0o600, opts...)
	}
	if err != nil {
		a.log.Warn("keeping a closed session's receipt material", "session", r.Session, "err", err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.count++
	if a.count > a.max+a.max/10 {
		a.prune()
	}
}

// load reads a closed session's receipt material.
func (a *receiptArchive) load(id string) (*archivedReceipt, error) {
	if a == nil {
		return nil, ErrNoSession
	}
	if err := protocol.ValidSessionID(id); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(a.path(id))
	if err != nil {
		return nil, err
	}
	var r archivedReceipt
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("receipt archive %s: %w", id, err)
	}
	if r.Session != id {
		return nil, fmt.Errorf("receipt archive %s: holds session %q", id, r.Session)
	}
	return &r, nil
}

// prune removes the oldest files past max. Callers hold a.mu.
func (a *receiptArchive) prune() {
	ents, err := os.ReadDir(a.dir)
	if err != nil {
		a.log.Warn("listing the receipt archive", "err", err)
		return
	}
	type file struct {
		name string
		mod  time.Time
	}
	var files []file
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			continue
		}
		files = append(files, file{e.Name(), info.ModTime()})
	}
	a.count = len(files)
	if len(files) <= a.max {
		return
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mod.Before(files[j].mod) })
	for _, f := range files[:len(files)-a.max] {
		if err := os.Remove(filepath.Join(a.dir, f.name)); err == nil || errors.Is(err, fs.ErrNotExist) {
			a.count--
		}
	}
}

// archive keeps s's receipt material as it closes. Callers hold s.mu.
func (s *session) archive(now time.Time) {
	s.n.receipts.keep(&archivedReceipt{
		ReceiptMaterial: *s.receiptMaterial(), PolicyName: s.pol.Name,
		Events: eventViews(s.rec.Events), Report: s.rec.Report, Closed: now,
	})
}
