package broker

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cloisterhq/cloister/sealed"
)

func TestSplitCombine(t *testing.T) {
	t.Parallel()
	var key sealed.Key
	copy(key[:], "0123456789abcdef")
	for _, c := range []struct{ n, k int }{{1, 1}, {3, 2}, {5, 3}, {4, 4}} {
		shares, com, err := Split(&key, c.n, c.k)
		if err != nil || len(shares) != c.n || len(com) != c.k {
			t.Fatalf("%d of %d: %v", c.k, c.n, err)
		}
		// Any k shares recover the key; the last k too.
		for _, set := range [][]Share{shares[:c.k], shares[c.n-c.k:]} {
			got, err := Combine(set, com)
			if err != nil || !bytes.Equal(got[:], key[:]) {
				t.Fatalf("%d of %d: %v", c.k, c.n, err)
			}
		}
		if c.k > 1 {
			if _, err := Combine(shares[:c.k-1], com); err == nil {
				t.Fatalf("%d of %d: recovered from %d shares", c.k, c.n, c.k-1)
			}
			// A wrong share is caught by the commitment, named.
			bad := append([]Share(nil), shares[:c.k]...)
			bad[0].Value[0] ^= 1
			if _, err := Combine(bad, com); !errors.Is(err, ErrWrongShare) {
				t.Fatalf("a wrong share: %v", err)
			}
		}
	}
	if _, _, err := Split(&key, 2, 3); err == nil {
		t.Fatal("threshold above the shares was accepted")
	}
}
