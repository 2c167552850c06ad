// Command guest is the Go side of the kernels benchmark as a WASI program:
//
//	guest KERNEL SIZE
//
// runs one kernel of package kernel and prints its checksum. KERNEL is
// none (nothing: measures start-up), intloop, matmul, sha256, sort, nn,
// aesgcm, json (which parses /input/doc.json and ignores SIZE) or groupby
// (which aggregates /input/data.csv and ignores SIZE). Built for
// GOOS=wasip1 GOARCH=wasm by the benchmark itself.
package main

import (
	"fmt"
	"os"

	"github.com/cloisterhq/cloister/bench/kernels/kernel"
	"github.com/cloisterhq/cloister/guest"
)

func main() {
	k, n, err := kernel.ParseArgs(os.Args)
	if err != nil {
		guest.Fail("%v", err)
	}
	var sum uint64
	switch k {
	case "none":
	case "intloop":
		sum = kernel.IntLoop(n)
	case "matmul":
		sum = kernel.MatMul(n)
	case "sha256":
		sum = kernel.SHA256(n)
	case "sort":
		sum = kernel.Sort(n)
	case "nn":
		sum = kernel.NN(n)
	case "aesgcm":
		sum = kernel.AESGCM(n)
	case "groupby":
		f, err := os.Open("/input/data.csv")
		if err != nil {
			guest.Fail("%v", err)
		}
		if sum, err = kernel.GroupBy(f); err != nil {
			guest.Fail("data.csv: %v", err)
		}
	case "json":
		doc, err := guest.ReadInput("doc.json")
		if err != nil {
			guest.Fail("%v", err)
		}
		if sum, err = kernel.JSONParse(doc); err != nil {
			guest.Fail("doc.json: %v", err)
		}
	default:
		guest.Fail("unknown kernel %q", k)
	}
	fmt.Println(sum)
}
