package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"

	"github.com/cloisterhq/cloister/guest/crypto"
	"github.com/cloisterhq/cloister/guest/hostmat"
	"github.com/cloisterhq/cloister/guest/hostsort"
)

// accel checks the host primitives (package guest/crypto) against the
// standard library compiled into this module, on random inputs of random
// sizes: every digest, ciphertext and opened plaintext must be the same
// bytes, and tampered messages must fail to open; signatures are judged
// as the standard library judges them, integers sorted (package
// guest/hostsort) as slices.Sort sorts them, and matrices multiplied
// (package guest/hostmat) to the bits of the same loop run here.
func accel() {
	rng := rand.New(rand.NewChaCha8([32]byte{'a', 'c', 'c', 'e', 'l'}))
	fill := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	fail := func(format string, args ...any) {
		fmt.Printf("MISMATCH: "+format+"\n", args...)
		os.Exit(1)
	}
	const rounds = 300
	for i := 0; i < rounds; i++ {
		n := rng.IntN(1 << (1 + rng.IntN(17)))
		data := fill(n)
		if crypto.Sum256(data) != sha256.Sum256(data) {
			fail("sha256 of %d bytes", n)
		}
		key := fill([]int{16, 24, 32}[rng.IntN(3)])
		nonce, ad := fill(12), fill(rng.IntN(64))
		block, _ := aes.NewCipher(key)
		gcm, _ := cipher.NewGCM(block)
		want := gcm.Seal(nil, nonce, data, ad)
		got, err := crypto.SealAESGCM(key, nonce, data, ad)
		if err != nil || !bytes.Equal(got, want) {
			fail("seal of %d bytes with a %d-byte key: %v", n, len(key), err)
		}
		plain, err := crypto.OpenAESGCM(key, nonce, want, ad)
		if err != nil || !bytes.Equal(plain, data) {
			fail("open of %d bytes: %v", n, err)
		}
		want[rng.IntN(len(want))] ^= 1 << rng.IntN(8)
		if _, err := crypto.OpenAESGCM(key, nonce, want, ad); err != crypto.ErrOpen {
			fail("tampered message opened: %v", err)
		}
		// Streaming: the data in random pieces, a digest midway.
		h := crypto.NewSHA256()
		for rest := data; ; {
			k := rng.IntN(len(rest) + 1)
			h.Write(rest[:k])
			if rest = rest[k:]; len(rest) == 0 {
				break
			}
			if rng.IntN(4) == 0 {
				h.Sum(nil)
			}
		}
		if sum := sha256.Sum256(data); !bytes.Equal(h.Sum([]byte{7}), append([]byte{7}, sum[:]...)) {
			fail("streaming sha256 of %d bytes", n)
		}
		// The AEAD in place, and appending to a buffer of its own.
		g, err := crypto.NewAESGCM(key)
		if err != nil {
			fail("NewAESGCM: %v", err)
		}
		inPlace := append(slices.Clone(data), make([]byte, 16)...)[:n]
		inPlace = g.Seal(inPlace[:0], nonce, inPlace, ad)
		if !bytes.Equal(inPlace, gcm.Seal(nil, nonce, data, ad)) {
			fail("seal in place of %d bytes", n)
		}
		if opened, err := g.Open(inPlace[:0], nonce, inPlace, ad); err != nil || !bytes.Equal(opened, data) {
			fail("open in place of %d bytes: %v", n, err)
		}
		prefix := []byte("prefix")
		if sealed := g.Seal(prefix, nonce, data, ad); !bytes.Equal(sealed, append([]byte("prefix"), gcm.Seal(nil, nonce, data, ad)...)) {
			fail("seal appending %d bytes", n)
		}
		priv := ed25519.NewKeyFromSeed(fill(32))
		pub := priv.Public().(ed25519.PublicKey)
		sig := ed25519.Sign(priv, data)
		if !crypto.VerifyEd25519(pub, data, sig) {
			fail("a valid signature of %d bytes refused", n)
		}
		// Tampered with, one way each round: a bit of the signature, the
		// message or the key flipped; S + L (the same scalar, not
		// canonical); a key of small order (the identity, or of order 2,
		// 4 or 8, either sign bit), half the time with R the identity
		// and S zero.
		tampered := append(slices.Clone(pub), append(slices.Clone(data), sig...)...)
		tp, tm, ts := tampered[:32], tampered[32:32+len(data)], tampered[32+len(data):]
		switch i % 5 {
		case 0:
			ts[rng.IntN(64)] ^= 1 << rng.IntN(8)
		case 1:
			if len(tm) > 0 {
				tm[rng.IntN(len(tm))] ^= 1 << rng.IntN(8)
			}
		case 2:
			tp[rng.IntN(32)] ^= 1 << rng.IntN(8)
		case 3:
			carry := 0
			for i, l := range [32]byte{0: 0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 31: 0x10} {
				v := int(ts[32+i]) + int(l) + carry
				ts[32+i], carry = byte(v), v>>8
			}
		case 4:
			torsion := [][]byte{{1}, append([]byte{0xec}, bytes.Repeat([]byte{0xff}, 31)...), {0},
				{0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05}}
			clear(tp)
			copy(tp, torsion[rng.IntN(len(torsion))])
			tp[31] = tp[31]&0x7f | byte(rng.IntN(2))<<7
			if tp[0] == 0xec {
				tp[31] &= 0x7f // y = -1: x = 0, whose sign bit must be clear
			}
			if rng.IntN(2) == 0 {
				clear(ts)
				ts[0] = 1 // R the identity, S zero: valid when [k]A is the identity
			}
		}
		if crypto.VerifyEd25519(tp, tm, ts) != ed25519.Verify(tp, tm, ts) {
			fail("a signature tampered with (way %d) judged otherwise than by the standard library", i%5)
		}
		u := make([]uint64, rng.IntN(1<<12))
		for i := range u {
			u[i] = rng.Uint64() >> rng.IntN(64)
		}
		s := make([]int64, len(u))
		for i, x := range u {
			s[i] = int64(x)
		}
		wu, ws := slices.Clone(u), slices.Clone(s)
		slices.Sort(wu)
		slices.Sort(ws)
		hostsort.Uint64s(u)
		hostsort.Int64s(s)
		if !slices.Equal(u, wu) || !slices.Equal(s, ws) {
			fail("sort of %d integers", len(u))
		}
		m, k, n := rng.IntN(24), rng.IntN(24), rng.IntN(24)
		a, b := make([]float64, m*k), make([]float64, k*n)
		for i := range a {
			a[i] = rng.NormFloat64()
		}
		for i := range b {
			b[i] = rng.NormFloat64() * float64(rng.IntN(1e6))
		}
		c := make([]float64, m*n)
		hostmat.MulF64(c, a, b, m, k, n)
		for i := 0; i < m; i++ {
			for j := 0; j < n; j++ {
				var sum float64
				for p := 0; p < k; p++ {
					sum += float64(a[i*k+p] * b[p*n+j])
				}
				if math.Float64bits(c[i*n+j]) != math.Float64bits(sum) {
					fail("matmul %d×%d·%d×%d: c[%d][%d] = %v, want %v", m, k, k, n, i, j, c[i*n+j], sum)
				}
			}
		}
	}
	if _, err := crypto.NewAESGCM(fill(7)); err == nil {
		fail("a 7-byte key was accepted by NewAESGCM")
	}
	if _, err := crypto.SealAESGCM(fill(7), fill(12), nil, nil); err == nil {
		fail("a 7-byte key was accepted")
	}
	fmt.Printf("agree: %d rounds\n", rounds)
}
