// Command cloister-isolate is the jailed worker of Cloister's isolate
// runtime: a node (or `cloister run`) starts one per program run, in fresh
// namespaces, and it serves exactly one job on its standard input. It links
// nothing but the isolate package and the Wasm runtime, so it starts several
// times faster than the cloister binary re-executed, which is what workers
// are when no cloister-isolate lies next to cloister.
//
// Build it without cgo, next to cloister:
//
//	CGO_ENABLED=0 go build -o bin/ ./cmd/cloister-isolate
//
// It is not meant to be run by hand.
package main

import (
	"os"

	"github.com/cloisterhq/cloister/isolate"
)

func main() {
	os.Exit(isolate.WorkerCommand("cloister-isolate is the isolate worker that cloister starts for each run; it is not run by hand.\nInstall it next to the cloister binary (CGO_ENABLED=0 go build -o DIR ./cmd/cloister-isolate) and cloister uses it."))
}
