//go:build cloister_wasmtime

// Command cloister-isolate-wasmtime is the jailed worker of Cloister's
// isolate runtime for the wasmtime engine (Cranelift): the same worker as
// cloister-isolate — the same jail, protocol, virtual file system and
// limits — running guests with wasmtime instead of wazero. A Runtime with
// Options.Engine "wasmtime" (`cloister run --engine wasmtime`) starts it.
// wasmtime is a Rust library linked through cgo, so this binary, unlike
// cloister and cloister-isolate, needs cgo:
//
//	go build -tags cloister_wasmtime -o bin/ ./cmd/cloister-isolate-wasmtime
//
// It is not meant to be run by hand.
package main

import (
	"os"

	"github.com/cloisterhq/cloister/isolate"
)

func main() {
	os.Exit(isolate.WorkerCommand("cloister-isolate-wasmtime is the isolate worker that cloister starts for each run with --engine wasmtime; it is not run by hand.\nInstall it next to the cloister binary (go build -tags cloister_wasmtime -o DIR ./cmd/cloister-isolate-wasmtime)."))
}
