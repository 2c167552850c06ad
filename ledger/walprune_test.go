package ledger

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestPruneWAL keeps the head and the newest chunks of CometBFT's
// write-ahead log, in the chunks' numeric order (wal.1000 is newer than
// wal.999), and touches nothing else in the directory.
func TestPruneWAL(t *testing.T) {
	dir := t.TempDir()
	head := filepath.Join(dir, "wal")
	for _, n := range []string{"wal", "wal.000", "wal.001", "wal.998", "wal.999", "wal.1000", "wal.x", "other"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n, err := pruneWAL(head, 2)
	if err != nil || n != 3 {
		t.Fatalf("pruneWAL removed %d (%v), want 3", n, err)
	}
	es, _ := os.ReadDir(dir)
	var left []string
	for _, e := range es {
		left = append(left, e.Name())
	}
	if want := []string{"other", "wal", "wal.1000", "wal.999", "wal.x"}; !slices.Equal(left, want) {
		t.Fatalf("left %v, want %v", left, want)
	}
	if n, err := pruneWAL(head, 2); err != nil || n != 0 {
		t.Fatalf("second pruneWAL removed %d (%v)", n, err)
	}
	if n, err := pruneWAL(filepath.Join(dir, "missing", "wal"), 2); err != nil || n != 0 {
		t.Fatalf("pruneWAL of a missing directory: %d (%v)", n, err)
	}
}
