// Command guestaccel is the kernels benchmark's Go guest with the host
// primitives (package guest/crypto):
//
//	guestaccel KERNEL SIZE
//
// runs sha256, aesgcm, sort or matmul of package kernel with the hashing,
// sealing, sorting or matrix product done by the host and prints the checksum, which must equal the plain guest's.
// It imports cloister_accel_v1, so it runs only in a Cloister isolate.
package main

import (
	"github.com/cloisterhq/cloister/bench/kernels/kernel"
	"github.com/cloisterhq/cloister/guest/crypto"
	"github.com/cloisterhq/cloister/guest/hostmat"
	"github.com/cloisterhq/cloister/guest/hostsort"
)

func main() {
	kernel.Main(map[string]func(int) (uint64, error){
		"sha256": kernel.Plain(func(n int) uint64 { return kernel.SHA256With(n, crypto.NewSHA256) }),
		"aesgcm": kernel.Plain(func(n int) uint64 { return kernel.AESGCMWith(n, crypto.NewAESGCM) }),
		"sort":   kernel.Plain(func(n int) uint64 { return kernel.SortWith(n, hostsort.Uint64s) }),
		"matmul": kernel.Plain(func(n int) uint64 {
			return kernel.MatMulWith(n, func(c, a, b []float64, n int) { hostmat.MulF64(c, a, b, n, n, n) })
		}),
	})
}
