// Command guestaccel is the kernels benchmark's Go guest with the host
// primitives (package guest/crypto):
//
//	guestaccel KERNEL SIZE
//
// runs sha256 or aesgcm of package kernel with the hashing or sealing done
// by the host and prints the checksum, which must equal the plain guest's.
// It imports cloister_accel_v1, so it runs only in a Cloister isolate.
package main

import (
	"fmt"
	"os"

	"github.com/cloisterhq/cloister/bench/kernels/kernel"
	"github.com/cloisterhq/cloister/guest"
	"github.com/cloisterhq/cloister/guest/crypto"
)

func main() {
	k, n, err := kernel.ParseArgs(os.Args)
	if err != nil {
		guest.Fail("%v", err)
	}
	var sum uint64
	switch k {
	case "none":
	case "sha256":
		sum = kernel.SHA256With(n, crypto.Sum256)
	case "aesgcm":
		sum = kernel.AESGCMWith(n, crypto.SealAESGCM)
	default:
		guest.Fail("kernel %q has no host-primitive version", k)
	}
	fmt.Println(sum)
}
