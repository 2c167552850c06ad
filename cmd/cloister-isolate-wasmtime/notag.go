//go:build !cloister_wasmtime

// Command cloister-isolate-wasmtime is the isolate worker for the wasmtime
// engine. Built without the cloister_wasmtime tag it only says how to
// build it (the tag links wasmtime, through cgo).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "cloister-isolate-wasmtime: build with the wasmtime engine: go build -tags cloister_wasmtime ./cmd/cloister-isolate-wasmtime")
	os.Exit(2)
}
