//go:build wasip1

package hostmat

import "unsafe"

//go:wasmimport cloister_accel_v1 matmul_f64
//go:noescape
func hostMatMulF64(a, b, c unsafe.Pointer, m, k, n uint32) uint32

// Status of matmul_f64 when the run is deterministic.
const notDeterministic = 3

// MulF64 sets c (m×n) to a (m×k) times b (k×n), all row-major; c must
// not overlap a or b. In a deterministic run the host refuses and the
// portable loop computes the same bits here.
func MulF64(c, a, b []float64, m, k, n int) {
	check(c, a, b, m, k, n)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		clear(c[:m*n])
		return
	}
	switch hostMatMulF64(unsafe.Pointer(unsafe.SliceData(a)), unsafe.Pointer(unsafe.SliceData(b)),
		unsafe.Pointer(unsafe.SliceData(c)), uint32(m), uint32(k), uint32(n)) {
	case 0:
	case notDeterministic:
		mulF64(c, a, b, m, k, n)
	case 4:
		panic("guest/hostmat: the host refused matmul_f64: the product is beyond the run's deadline")
	default:
		panic("guest/hostmat: the host refused matmul_f64: c overlaps a or b")
	}
}
