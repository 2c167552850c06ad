// Package storage holds benchmarks of content-addressed storage: sealing
// and opening (package sealed) beside plain age with an X25519 recipient
// and raw AES-256-GCM over 64 KiB chunks, in the same run; and put and get
// throughput of blobs (package blob) against a real OCI registry (Debian's
// docker-registry, started on loopback by internal/registrytest) and
// against the node's own store (package blob/server, served on loopback as
// `cloister node --blob-listen` serves it).
//
// Each benchmark reports MB/s of wall time and cpu-MB/s, the bytes per
// second of CPU time spent by every process involved (this one, and the
// registry's for the registry runs): on a machine shared with other jobs
// the second is the steadier figure. The size of a blob or file is
// -storage.mib (64 by default). TestHarness runs every benchmark once at
// 1 MiB so that the harness does not rot. Figures and the commands that
// produced them: docs/performance.md, section "Storage".
package storage
