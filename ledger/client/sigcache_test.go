package client

import (
	"bytes"
	"crypto/ed25519"
	"testing"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// The signature cache takes only byte-identical entries that verified
// before: an entry whose signature fails is refused every time, however
// often its good twin was seen, and a full cache starts over.
func TestSignatureCache(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(nil)
	c, err := New("http://127.0.0.1:1", WithSignatureCache(2))
	if err != nil {
		t.Fatal(err)
	}
	entry := func(body string) []byte {
		se, err := verify.NewEntry(k, "offer", map[string]string{"x": body})
		if err != nil {
			t.Fatal(err)
		}
		return se.Encode()
	}
	check := func(raw []byte) error {
		se, err := verify.DecodeEntry(raw)
		if err != nil {
			t.Fatal(err)
		}
		return c.verifySig(raw, se)
	}
	good := entry("a")
	for range 2 {
		if err := check(good); err != nil {
			t.Fatalf("a good entry: %v", err)
		}
	}
	se, _ := verify.DecodeEntry(good)
	se.Signature[0] ^= 1
	bad := se.Encode()
	if bytes.Equal(bad, good) {
		t.Fatal("the forged entry encodes as the good one")
	}
	for range 2 {
		if err := check(bad); err == nil {
			t.Fatal("an entry with a broken signature passed")
		}
	}
	check(entry("b"))
	check(entry("c")) // the cache was full: it starts over
	if n := len(c.sigs.seen); n != 1 {
		t.Fatalf("%d entries cached, want 1 after starting over", n)
	}
}
