package main

import "fmt"

// gfMul multiplies in GF(2^8) modulo 0x11B. It uses masks instead of
// branches or tables and always runs eight rounds, so its timing does not
// depend on the (secret) operands.
func gfMul(a, b byte) byte {
	var p byte
	for i := 0; i < 8; i++ {
		// mask is 0xFF when the low bit of b is set.
		mask := -(b & 1)
		p ^= a & mask
		carry := -(a >> 7)
		a = a<<1 ^ 0x1B&carry // reduce by x^8+x^4+x^3+x+1
		b >>= 1
	}
	return p
}

// gfInv returns the multiplicative inverse of a non-zero a as a^254
// (a^255 = 1 in the multiplicative group of order 255).
func gfInv(a byte) byte {
	r := byte(1)
	base := a
	for e := 254; e > 0; e >>= 1 {
		if e&1 == 1 {
			r = gfMul(r, base)
		}
		base = gfMul(base, base)
	}
	return r
}

// ShareError says which share (by position) is unusable and why.
type ShareError struct {
	Index int
	Msg   string
}

func (e *ShareError) Error() string { return fmt.Sprintf("share %d: %s", e.Index, e.Msg) }

// Reconstruct interpolates the polynomial through all shares at x = 0.
// Each share is x followed by the y values. It returns a *ShareError for a
// share that is too short, has x = 0, repeats another share's x, or differs
// in length from the first share.
func Reconstruct(shares [][]byte) ([]byte, error) {
	if len(shares) == 0 {
		return nil, fmt.Errorf("no shares")
	}
	n := len(shares[0])
	seen := make(map[byte]int, len(shares))
	for i, s := range shares {
		switch {
		case len(s) < 2:
			return nil, &ShareError{i, fmt.Sprintf("%d bytes; a share is one x byte followed by at least one y byte", len(s))}
		case len(s) != n:
			return nil, &ShareError{i, fmt.Sprintf("%d bytes, but share 0 has %d; all shares must be the same length", len(s), n)}
		case s[0] == 0:
			return nil, &ShareError{i, "x = 0 is the secret's own coordinate, not a share"}
		}
		if j, dup := seen[s[0]]; dup {
			return nil, &ShareError{i, fmt.Sprintf("x = %d repeats share %d", s[0], j)}
		}
		seen[s[0]] = i
	}
	// Lagrange basis at 0: l_j(0) = Π_{m≠j} x_m / (x_m - x_j); subtraction
	// is XOR in characteristic 2.
	basis := make([]byte, len(shares))
	for j, sj := range shares {
		num, den := byte(1), byte(1)
		for m, sm := range shares {
			if m == j {
				continue
			}
			num = gfMul(num, sm[0])
			den = gfMul(den, sm[0]^sj[0])
		}
		basis[j] = gfMul(num, gfInv(den))
	}
	secret := make([]byte, n-1)
	for j, sj := range shares {
		for i, y := range sj[1:] {
			secret[i] ^= gfMul(y, basis[j])
		}
	}
	return secret, nil
}
