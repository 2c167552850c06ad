package main

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/examples/internal/guesttest"
)

func readShares(t *testing.T, names ...string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join("testdata", "input", n))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestVeracruzShares(t *testing.T) {
	got, err := Reconstruct(readShares(t, "share-1", "share-2", "share-3"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "Hello World!\n" {
		t.Fatalf("secret = %q, want %q", got, "Hello World!\n")
	}
	// Order of shares does not matter.
	got, _ = Reconstruct(readShares(t, "share-3", "share-1", "share-2"))
	if string(got) != "Hello World!\n" {
		t.Fatalf("reordered secret = %q", got)
	}
}

// The published shares come from a degree-2 polynomial (threshold 3): any two
// of them interpolate a line that misses the secret at x = 0.
func TestBelowThresholdGivesWrongSecret(t *testing.T) {
	for _, pair := range [][2]string{{"share-1", "share-2"}, {"share-1", "share-3"}, {"share-2", "share-3"}} {
		got, err := Reconstruct(readShares(t, pair[0], pair[1]))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 13 || string(got) == "Hello World!\n" {
			t.Fatalf("%v reconstructed %q; two shares of a threshold-3 split must not give the secret", pair, got)
		}
	}
}

func TestFieldArithmetic(t *testing.T) {
	// FIPS-197 §4.2 worked example: {57}·{83} = {c1}, {57}·{13} = {fe}.
	if got := gfMul(0x57, 0x83); got != 0xc1 {
		t.Fatalf("57·83 = %02x, want c1", got)
	}
	if got := gfMul(0x57, 0x13); got != 0xfe {
		t.Fatalf("57·13 = %02x, want fe", got)
	}
	for a := 1; a < 256; a++ {
		if p := gfMul(byte(a), gfInv(byte(a))); p != 1 {
			t.Fatalf("%02x · inv(%02x) = %02x", a, a, p)
		}
		for b := 0; b < 256; b += 17 {
			if gfMul(byte(a), byte(b)) != gfMul(byte(b), byte(a)) {
				t.Fatalf("multiplication not commutative at %02x,%02x", a, b)
			}
		}
	}
}

// split makes n shares of secret with threshold k (random polynomial of
// degree k-1 per byte, constant term the secret byte).
func split(rng *rand.Rand, secret []byte, k, n int) [][]byte {
	shares := make([][]byte, n)
	for i := range shares {
		shares[i] = []byte{byte(i + 1)}
	}
	for _, s := range secret {
		coef := make([]byte, k)
		coef[0] = s
		for c := 1; c < k; c++ {
			coef[c] = byte(rng.IntN(256))
		}
		for i := range shares {
			x := shares[i][0]
			var y byte // Horner
			for c := k - 1; c >= 0; c-- {
				y = gfMul(y, x) ^ coef[c]
			}
			shares[i] = append(shares[i], y)
		}
	}
	return shares
}

func TestSplitReconstructAnySubset(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	secret := []byte("the launch code is 0000")
	for k := 1; k <= 5; k++ {
		shares := split(rng, secret, k, 7)
		for trial := 0; trial < 20; trial++ {
			perm := rng.Perm(7)
			m := k + rng.IntN(7-k+1) // at least the threshold
			var sub [][]byte
			for _, i := range perm[:m] {
				sub = append(sub, shares[i])
			}
			got, err := Reconstruct(sub)
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("k=%d with %d shares: %q, %v", k, m, got, err)
			}
		}
	}
}

func TestBadShares(t *testing.T) {
	ok := []byte{1, 2, 3}
	cases := []struct {
		shares [][]byte
		index  int
		msg    string
	}{
		{[][]byte{ok, {2}}, 1, "at least one y byte"},
		{[][]byte{ok, {2, 3}}, 1, "same length"},
		{[][]byte{ok, {0, 3, 4}}, 1, "x = 0"},
		{[][]byte{ok, {1, 5, 6}}, 1, "repeats share 0"},
		{[][]byte{{}}, 0, "at least one y byte"},
	}
	for _, c := range cases {
		_, err := Reconstruct(c.shares)
		var se *ShareError
		if !errors.As(err, &se) || se.Index != c.index || !strings.Contains(se.Msg, c.msg) {
			t.Errorf("Reconstruct(%v) = %v, want share %d error containing %q", c.shares, err, c.index, c.msg)
		}
	}
	if _, err := Reconstruct(nil); err == nil {
		t.Error("Reconstruct(nil) succeeded")
	}
}

// TestRunNatively runs the program's main logic against a guest root on the
// host file system, as the isolate would lay it out.
func TestRunNatively(t *testing.T) {
	root := guesttest.Root(t, map[string][]byte{
		"share-1": guesttest.Testdata(t, "input/share-1"),
		"share-2": guesttest.Testdata(t, "input/share-2"),
		"share-3": guesttest.Testdata(t, "input/share-3"),
	})
	if err := run(); err != nil {
		t.Fatal(err)
	}
	if got := guesttest.Output(t, root, "secret"); string(got) != "Hello World!\n" {
		t.Fatalf("/output/secret = %q", got)
	}
	// A bad share is reported by its input name.
	if err := os.WriteFile(filepath.Join(root, "input", "share-4"), []byte{2, 1}, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := run(); err == nil || !strings.Contains(err.Error(), `input "share-4"`) {
		t.Fatalf("run with a bad share = %v", err)
	}
}

// FuzzReconstruct feeds arbitrary shares (the input split at 0xFF bytes
// into up to eight shares) and checks that Reconstruct either refuses them
// or returns one secret byte per y byte.
func FuzzReconstruct(f *testing.F) {
	f.Add([]byte{1, 2, 3, 0xff, 2, 4, 5, 0xff, 3, 6, 7})
	f.Add([]byte{0xff, 0, 0xff, 1, 1})
	f.Add([]byte{1, 0xdc, 0x06, 0xff, 2, 0x7f, 0x38})
	f.Fuzz(func(t *testing.T, in []byte) {
		shares := bytes.SplitN(in, []byte{0xff}, 8)
		secret, err := Reconstruct(shares)
		if err == nil && len(secret) != len(shares[0])-1 {
			t.Fatalf("secret length %d from shares of length %d", len(secret), len(shares[0]))
		}
	})
}
