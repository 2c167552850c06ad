package hostmat

import (
	"math/rand/v2"
	"testing"
)

// TestMulF64 checks the portable product against a 2×3·3×2 worked by hand
// and against sums taken in the same order.
func TestMulF64(t *testing.T) {
	c := make([]float64, 4)
	MulF64(c, []float64{1, 2, 3, 4, 5, 6}, []float64{7, 8, 9, 10, 11, 12}, 2, 3, 2)
	if want := []float64{58, 64, 139, 154}; c[0] != want[0] || c[1] != want[1] || c[2] != want[2] || c[3] != want[3] {
		t.Fatalf("got %v, want %v", c, want)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		m, k, n := rng.IntN(9), rng.IntN(9), rng.IntN(9)
		a, b := make([]float64, m*k), make([]float64, k*n)
		for i := range a {
			a[i] = rng.NormFloat64()
		}
		for i := range b {
			b[i] = rng.NormFloat64()
		}
		c := make([]float64, m*n)
		for i := range c {
			c[i] = 99 // overwritten, not added to
		}
		MulF64(c, a, b, m, k, n)
		for i := 0; i < m; i++ {
			for j := 0; j < n; j++ {
				var s float64
				for p := 0; p < k; p++ {
					s += float64(a[i*k+p] * b[p*n+j])
				}
				if c[i*n+j] != s {
					t.Fatalf("%d×%d·%d×%d: c[%d][%d] = %v, want %v", m, k, k, n, i, j, c[i*n+j], s)
				}
			}
		}
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a short matrix was accepted")
		}
	}()
	MulF64(make([]float64, 3), make([]float64, 4), make([]float64, 4), 2, 2, 2)
}
