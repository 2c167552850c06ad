// Package guest is the small SDK for Go programs that run inside a Cloister
// isolate (built with GOOS=wasip1 GOARCH=wasm). It reads the files the
// parties supplied, which the runtime shows read-only at /input/NAME, and
// writes results under /output/NAME, where the runtime collects them after
// the run. It adds JSON helpers and a Fail function that ends the program
// with a message on stderr and exit status 1.
//
// The package is only a convenience over plain WASI paths: C, Rust or any
// other WASI preview-1 program reads /input/NAME and writes /output/NAME with
// its ordinary file API and needs nothing from here. It is not a host-side
// API (see package isolate for running programs) and it offers no
// confidentiality of its own: what protects inputs is the isolate and the
// policy around it.
//
// The same program also runs natively, which makes guest logic unit-testable
// and benchmarkable without a WebAssembly runtime: set CLOISTER_GUEST_ROOT
// to a directory holding input/ and output/ and the package uses
// $CLOISTER_GUEST_ROOT/input and $CLOISTER_GUEST_ROOT/output instead of
// /input and /output.
package guest
