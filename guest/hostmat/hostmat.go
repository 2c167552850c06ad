// Package hostmat multiplies dense float64 matrices on the host: inside a
// Cloister isolate the product runs natively in the worker, on the guest's
// own memory (the host-primitive module cloister_accel_v1, function
// matmul_f64); elsewhere, and in deterministic runs, where the host
// refuses floating-point primitives (decision 0149), it is the same loop
// compiled with the program. Both are the plain i-k-j loop with every
// product rounded before it is added, so the bits are the same either
// way.
//
// A program that imports this package runs only in a runtime that offers
// cloister_accel_v1 (every Cloister engine does).
package hostmat

// mulF64 is the portable product: c = a·b, the i-k-j loop, each product
// rounded before it is added (no fused multiply-add), so its bits are
// the host's.
func mulF64(c, a, b []float64, m, k, n int) {
	clear(c[:m*n])
	for ip := range m * k {
		i, aip := ip/k, a[ip]
		for j, bpj := range b[ip%k*n : ip%k*n+n] {
			c[i*n+j] += float64(aip * bpj)
		}
	}
}

// check panics unless a (m×k), b (k×n) and c (m×n) are large enough.
func check(c, a, b []float64, m, k, n int) {
	if m < 0 || k < 0 || n < 0 || len(a) < m*k || len(b) < k*n || len(c) < m*n {
		panic("guest/hostmat: a matrix is smaller than its dimensions")
	}
}
