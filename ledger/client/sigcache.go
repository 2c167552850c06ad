package client

import (
	"crypto/sha256"
	"sync"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// WithSignatureCache makes the client remember the signed entries whose
// signatures it has checked (the sha256 of each one's exact bytes, up to
// n of them) and not check them again: a dispatcher reads the same live
// offers every second, and an Ed25519 check is most of the cost of
// reading them. Only byte-identical entries are taken from the cache, so
// what is accepted is exactly what a check would accept.
func WithSignatureCache(n int) Option {
	return func(c *Client) {
		if n > 0 {
			c.sigs = &sigCache{max: n, seen: map[[32]byte]struct{}{}}
		}
	}
}

// sigCache is a bounded set of entries whose signatures verified; when
// full it starts over.
type sigCache struct {
	mu   sync.Mutex
	max  int
	seen map[[32]byte]struct{}
}

// verifySig checks se's signature, raw being the bytes se was decoded
// from, unless the cache holds raw already.
func (c *Client) verifySig(raw []byte, se *verify.SignedEntry) error {
	if c.sigs == nil {
		return se.VerifySignature()
	}
	h := sha256.Sum256(raw)
	c.sigs.mu.Lock()
	_, ok := c.sigs.seen[h]
	c.sigs.mu.Unlock()
	if ok {
		return nil
	}
	if err := se.VerifySignature(); err != nil {
		return err
	}
	c.sigs.mu.Lock()
	if len(c.sigs.seen) >= c.sigs.max {
		clear(c.sigs.seen)
	}
	c.sigs.seen[h] = struct{}{}
	c.sigs.mu.Unlock()
	return nil
}
