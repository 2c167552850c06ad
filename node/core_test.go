package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest/software"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/seal"
)

// The core keeps small plaintexts it opened at upload for the run — only
// for the very envelope it opened — and nothing large; drop and wipe
// forget them.
func TestCoreKeepsOnlySmallPlaintexts(t *testing.T) {
	pk, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	a, err := software.NewAttester(pk.Signer())
	if err != nil {
		t.Fatal(err)
	}
	hash := sha256.Sum256([]byte("policy"))
	c, err := newCore(context.Background(), "00112233445566778899aabbccddeeff", hash, a)
	if err != nil {
		t.Fatal(err)
	}
	sealTo := func(kind, name string, pt []byte) []byte {
		env, err := seal.Seal(c.hpkeKey.PublicKey(), pt, protocol.SealInfo(kind, c.id, name, ""), protocol.SealAAD(hash))
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	kept := func(kind, name string) bool {
		c.openedMu.Lock()
		defer c.openedMu.Unlock()
		_, ok := c.opened[openedKey{kind, name}]
		return ok
	}
	small, large := []byte("a,b\n1,2\n"), bytes.Repeat([]byte{7}, keepMax+1)
	smallEnv, largeEnv := sealTo(protocol.KindInput, "small", small), sealTo(protocol.KindInput, "large", large)
	if err := c.checkInput("small", smallEnv, [32]byte{}); err != nil {
		t.Fatal(err)
	}
	if err := c.checkInput("large", largeEnv, [32]byte{}); err != nil {
		t.Fatal(err)
	}
	if !kept(protocol.KindInput, "small") || kept(protocol.KindInput, "large") {
		t.Fatalf("kept small %v, large %v; want only the small one", kept(protocol.KindInput, "small"), kept(protocol.KindInput, "large"))
	}
	// Another envelope under the same name is opened, not served from
	// what was kept for the first.
	other := sealTo(protocol.KindInput, "small", []byte("other"))
	got, err := c.take(protocol.KindInput, "small", other)
	if err != nil || string(got) != "other" {
		t.Fatalf("take with another envelope: %q %v", got, err)
	}
	if got, err := c.take(protocol.KindInput, "large", largeEnv); err != nil || !bytes.Equal(got, large) {
		t.Fatalf("take of the large input: %d bytes, %v", len(got), err)
	}
	if err := c.checkInput("small", smallEnv, [32]byte{}); err != nil {
		t.Fatal(err)
	}
	c.drop(protocol.KindInput, "small")
	if kept(protocol.KindInput, "small") {
		t.Errorf("drop left the plaintext")
	}
	if err := c.checkInput("small", smallEnv, [32]byte{}); err != nil {
		t.Fatal(err)
	}
	c.wipe()
	if kept(protocol.KindInput, "small") {
		t.Errorf("wipe left the plaintext")
	}
}
