// Package kernels benchmarks compute kernels (integer loop, float matrix
// multiply, SHA-256, sort, JSON parse) as WebAssembly against the same code
// native: Go compiled for wasip1 and run by the isolate runtime (in-process,
// and once through the jailed worker), C compiled with clang for wasm32-wasi
// and run the same way, both modules under Node.js's WASI (V8) when node is
// installed, and native Go and native C (gcc) for reference. Every run's
// checksum is compared with native Go's, so a faster wrong answer fails.
//
// It is a measurement, not a library: the package has only tests and
// benchmarks. Results and their explanation are in
// docs/performance-kernels.md; run with
//
//	go test -run '^$' -bench . -benchtime=3x ./bench/kernels/
//
// The Go guest, the C programs and the benchmark's JSON document are built
// into a temporary directory at start; nothing built is committed.
package kernels
