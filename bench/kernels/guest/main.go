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
	"os"

	"github.com/cloisterhq/cloister/bench/kernels/kernel"
	"github.com/cloisterhq/cloister/guest"
)

func main() {
	kernel.Main(map[string]func(int) (uint64, error){
		"intloop": kernel.Plain(kernel.IntLoop),
		"matmul":  kernel.Plain(kernel.MatMul),
		"sha256":  kernel.Plain(kernel.SHA256),
		"sort":    kernel.Plain(kernel.Sort),
		"nn":      kernel.Plain(kernel.NN),
		"aesgcm":  kernel.Plain(kernel.AESGCM),
		"groupby": func(int) (uint64, error) {
			f, err := os.Open("/input/data.csv")
			if err != nil {
				return 0, err
			}
			return kernel.GroupBy(f)
		},
		"json": func(int) (uint64, error) {
			doc, err := guest.ReadInput("doc.json")
			if err != nil {
				return 0, err
			}
			return kernel.JSONParse(doc)
		},
	})
}
