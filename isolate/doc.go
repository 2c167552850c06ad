// Package isolate runs untrusted WASI preview-1 WebAssembly programs, each in
// a jailed worker process (cmd/cloister-isolate when it lies next to the
// running binary, else the running binary re-executed) with its own
// network, mount, PID, IPC and UTS namespaces (and user namespace, unless a
// root node's worker limits its own capabilities instead), an empty
// read-only root, rlimits, an unprivileged uid, no_new_privs, a seccomp allow-list and a
// cgroup v2 where available, killed at its deadline. The guest sees only
// /input/NAME (read-only) and /output/ (bounded, in memory); its linear memory
// is capped, and a run can be made deterministic (fixed clocks, seeded
// randomness). Every protection that could not be applied is named in the
// run report with the reason.
//
// It is not an attestation mechanism (see package attest) and does not
// protect the guest from the node operator. Programs that embed a Runtime
// must call IsWorker/WorkerMain first thing in main (or TestMain), because
// without cloister-isolate workers are this same binary re-executed. See
// docs/isolate.md for what each layer protects against, and what it does not.
package isolate
