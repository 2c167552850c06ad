package verify

import (
	"crypto/ed25519"
	"sync"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// Signature is the ledger's one signature rule: Ed25519 as RFC 8032
// specifies it, verified one signature at a time, cofactorless, exactly as
// the Go standard library's crypto/ed25519 does (and browsers' WebCrypto,
// which also refuses a non-canonical s). Entries, vote extensions and
// checkpoint notes are all checked by it. Batch or cofactored verification
// is never used: it can accept signatures this rule refuses, and then two
// honest verifiers would disagree about the log.
//
// The arithmetic is curve25519-voi's with its standard-library options
// (decision 0152): the same accept/refuse outcome as crypto/ed25519 —
// FuzzSignatureMatchesStandardLibrary and testdata/signatures.json hold it
// to that — for about two thirds of the CPU, and less again for a key seen
// recently, whose decompressed point is kept (keyCache).
func Signature(pub ed25519.PublicKey, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	x := keys.get(pub)
	if x == nil {
		return false
	}
	return voi.VerifyExpandedWithOptions(x, msg, sig, stdlibRule)
}

// stdlibRule is voi's preset for crypto/ed25519's outcome: small-order
// points allowed, a non-canonical key encoding allowed when it decodes,
// s < L, the cofactorless equation compared as encodings.
var stdlibRule = &voi.Options{Verify: voi.VerifyOptionsStdLib}

// keyCache keeps the decompressed points of recently used public keys:
// decompressing a key is about a sixth of a verification, and a ledger
// sees the same submitters again and again. Bounded: when full it starts
// over. A key that does not decompress is not kept (and never verifies).
type keyCache struct {
	mu sync.RWMutex
	m  map[[ed25519.PublicKeySize]byte]*voi.ExpandedPublicKey
}

const keyCacheMax = 1 << 14

var keys = &keyCache{m: map[[ed25519.PublicKeySize]byte]*voi.ExpandedPublicKey{}}

func (c *keyCache) get(pub ed25519.PublicKey) *voi.ExpandedPublicKey {
	k := [ed25519.PublicKeySize]byte(pub)
	c.mu.RLock()
	x := c.m[k]
	c.mu.RUnlock()
	if x != nil {
		return x
	}
	x, err := voi.NewExpandedPublicKey(voi.PublicKey(pub))
	if err != nil {
		return nil
	}
	c.mu.Lock()
	if len(c.m) >= keyCacheMax {
		clear(c.m)
	}
	c.m[k] = x
	c.mu.Unlock()
	return x
}
