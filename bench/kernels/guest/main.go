// Command guest is the Go side of the kernels benchmark as a WASI program:
//
//	guest KERNEL SIZE
//
// runs one kernel of package kernel and prints its checksum. KERNEL is
// none (nothing: measures start-up), intloop, matmul, sha256, sort or json
// (which parses /input/doc.json and ignores SIZE). Built for
// GOOS=wasip1 GOARCH=wasm by the benchmark itself.
package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/cloisterhq/cloister/bench/kernels/kernel"
	"github.com/cloisterhq/cloister/guest"
)

func main() {
	if len(os.Args) != 3 {
		guest.Fail("usage: guest KERNEL SIZE")
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil || n < 0 {
		guest.Fail("size %q: not a non-negative integer", os.Args[2])
	}
	var sum uint64
	switch os.Args[1] {
	case "none":
	case "intloop":
		sum = kernel.IntLoop(n)
	case "matmul":
		sum = kernel.MatMul(n)
	case "sha256":
		sum = kernel.SHA256(n)
	case "sort":
		sum = kernel.Sort(n)
	case "json":
		doc, err := guest.ReadInput("doc.json")
		if err != nil {
			guest.Fail("%v", err)
		}
		if sum, err = kernel.JSONParse(doc); err != nil {
			guest.Fail("doc.json: %v", err)
		}
	default:
		guest.Fail("unknown kernel %q", os.Args[1])
	}
	fmt.Println(sum)
}
