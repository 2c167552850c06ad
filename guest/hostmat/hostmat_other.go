//go:build !wasip1

package hostmat

// MulF64 sets c (m×n) to a (m×k) times b (k×n), all row-major; c must
// not overlap a or b (outside an isolate: the portable loop).
func MulF64(c, a, b []float64, m, k, n int) {
	check(c, a, b, m, k, n)
	mulF64(c, a, b, m, k, n)
}
