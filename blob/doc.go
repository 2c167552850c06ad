// Package blob stores and fetches content-addressed blobs — sealed
// programs, public inputs such as model weights, directory manifests — on
// the OCI distribution protocol, so that any OCI registry can hold them and
// a node can serve its own (package blob/server).
//
// A blob is named by its digest, "sha256:<hex>" of its bytes. A Location is
// a list of stores; Fetch tries them in order and takes the first copy
// whose bytes hash to the digest asked for: a store that is down, does not
// have the blob or serves other bytes is skipped for the next, and the
// error lists what each one did. Nothing is trusted from a store but bytes
// that match the digest the caller already holds (from a policy, a ledger
// entry, a seal summary).
//
// Push uploads a blob and a deterministic manifest that references it (no
// timestamps, so the same blob always gives the same manifest digest),
// tagged "sha256-<hex>" so that registries that collect unreferenced blobs
// keep it. A directory is a manifest listing file names, digests and sizes
// (PushDir, FetchDir).
//
// Registry access goes through oras.land/oras-go/v2. Pushes to a Cloister
// store are signed with a principal's Ed25519 key (blob/server verifies);
// other registries use their own credentials. docs/storage.md describes
// the formats and what a store operator can learn.
package blob
