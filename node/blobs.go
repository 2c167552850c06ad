package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cloisterhq/cloister/blob"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/policy"
)

// MaxStoredInput bounds one input the node fetches from stores.
const MaxStoredInput = 4 << 30

// blobCache holds stored inputs the node fetched, by digest, under
// DATA/blobs/sha256/<hex>. A file is there only once its bytes hashed to
// its digest (blob.Location.Fetch, committed through atomicfile), so a
// crash mid-fetch leaves nothing that could be taken for the input; and
// since a stored input's digest is its pinned SHA-256, that check is the
// pin's. Files are read-only to the node; they are not re-hashed at each
// run (whoever can alter the data directory is the operator, whom the
// software class trusts anyway).
type blobCache struct {
	dir  string
	opts blob.Options

	mu       sync.Mutex
	inflight map[blob.Digest]*sync.Mutex
}

func newBlobCache(dataDir string) (*blobCache, error) {
	dir := filepath.Join(dataDir, "blobs", "sha256")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	return &blobCache{dir: dir, inflight: map[blob.Digest]*sync.Mutex{}}, nil
}

// fetchInput returns the path of stored input in, fetching it from its
// stores (the first matching copy) unless the cache has it. Concurrent
// sessions that need the same blob fetch it once.
func (c *blobCache) fetchInput(ctx context.Context, in *policy.Input) (string, error) {
	d, err := blob.ParseDigest(in.From.Digest)
	if err != nil {
		return "", err
	}
	if h, ok := in.PinnedSHA256(); !ok || blob.FromSum(h) != d {
		return "", fmt.Errorf("stored input %q: digest %s is not its pinned sha256", in.Name, d)
	}
	path := filepath.Join(c.dir, d.Hex())
	c.mu.Lock()
	l := c.inflight[d]
	if l == nil {
		l = new(sync.Mutex)
		c.inflight[d] = l
	}
	c.mu.Unlock()
	l.Lock()
	defer l.Unlock()
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	loc, err := blob.OpenLocation(in.From.Stores, c.opts)
	if err != nil {
		return "", err
	}
	if _, _, err := loc.Fetch(ctx, d, MaxStoredInput, func(int64) (blob.Sink, error) {
		return atomicfile.Create(path, 0o400)
	}); err != nil {
		return "", err
	}
	return path, nil
}
