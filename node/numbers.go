package node

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/cloisterhq/cloister/internal/atomicfile"
)

// EntryNumbersFile, under the data directory, holds the first number not
// yet reserved for the node's event-log entries.
const EntryNumbersFile = "ledger-numbers"

// entryNumbers hands out the numbers of the node's event-log entries (the
// ledger's nonces: unique per submitter, forever). They are reserved in
// blocks, one durable write per block; a restart continues after the last
// block reserved, leaving the rest of it unused. The first block starts at
// a random point below 2^52, so that a data directory rebuilt around the
// same platform key is unlikely to number an entry as an earlier one was.
type entryNumbers struct {
	path string

	mu          sync.Mutex
	next, limit uint64
}

const (
	numberBlock = 4096
	maxNumber   = 1<<53 - 1 // the ledger's bound on nonces
)

// The reservation is synced even on a node that does not sync its
// sessions (NoSync): a number used twice would make the ledger take a
// later entry for an earlier one and drop it.
func openEntryNumbers(dataDir string) (*entryNumbers, error) {
	path := filepath.Join(dataDir, EntryNumbersFile)
	e := &entryNumbers{path: path}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		e.next = 1<<40 + rand.Uint64N(1<<52-1<<40)
	case err != nil:
		return nil, err
	default:
		v, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if perr != nil || v == 0 || v > maxNumber-numberBlock {
			return nil, fmt.Errorf("%s: %q is not an entry number (the next one not yet used, in decimal)", path, strings.TrimSpace(string(b)))
		}
		e.next = v
	}
	e.limit = e.next
	return e, nil
}

// take returns a number no entry of this node has had.
func (e *entryNumbers) take() (uint64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.next == e.limit {
		if e.limit+numberBlock > maxNumber {
			return 0, errors.New("node: event-log entry numbers exhausted")
		}
		if err := e.reserve(e.limit + numberBlock); err != nil {
			return 0, err
		}
		e.limit += numberBlock
	}
	n := e.next
	e.next++
	return n, nil
}

// reserve records that numbers below upTo may have been used.
func (e *entryNumbers) reserve(upTo uint64) error {
	if err := atomicfile.WriteFile(e.path, []byte(strconv.FormatUint(upTo, 10)+"\n"), 0o600); err != nil {
		return fmt.Errorf("reserving entry numbers: %w", err)
	}
	return nil
}
