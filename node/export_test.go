package node

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/ledger"
)

// OpenTestLedger starts an embedded single-validator ledger in a temporary
// directory for the test (closed when it ends). Defined here, in package
// node, so that the package's own tests and its external tests share it.
func OpenTestLedger(t testing.TB) *ledger.Embedded {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := ledger.OpenEmbedded(ctx, filepath.Join(t.TempDir(), "ledger"), ledger.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// SetCommitHook has f run while a streamed upload's commit checks its
// file (holding no lock); the returned function removes it.
func SetCommitHook(f func()) (restore func()) {
	commitHook = f
	return func() { commitHook = nil }
}
