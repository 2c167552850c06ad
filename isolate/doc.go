// Package isolate runs untrusted WASI preview-1 WebAssembly programs, each in
// a jailed worker process (the cloister binary re-executed) with its own empty
// network and mount namespaces, rlimits, a seccomp filter, no_new_privs and a
// cgroup where available, killed at its deadline. The guest sees only
// /input/NAME (read-only) and /output/ (bounded). See docs/isolate.md for what
// each layer protects against, and what it does not.
package isolate
