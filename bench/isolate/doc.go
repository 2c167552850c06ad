// Package isolatebench measures what the isolate runtime costs around a
// program: a trivial module run through a cold jailed worker, a warm pooled
// worker and plain in-process wazero, and the instantiate time of a small C
// module whose compiled code is already in the cache. It holds benchmarks
// only; figures and the commands that produce them are in
// docs/performance-isolate.md.
package isolatebench
