// Package server is the small on-disk blob store a node serves: the subset
// of the OCI distribution protocol that package blob (and oras, crane,
// docker pull of the blobs) uses, so that a single machine needs no
// registry. docs/storage.md lists the endpoints.
//
// It faces the network. Reads are open: blobs are ciphertexts or public
// data named by digest, and every reader checks the digest. Every write is
// signed by a principal's Ed25519 key that the operator allowed
// (Authorization: Cloister-Ed25519, a fresh timestamp and a nonce not seen
// before), and is bounded: blob and manifest sizes, bytes stored per
// principal and in total, uploads per principal and in total, reads in
// flight per client address and in total, idle uploads expire. A refusal
// names the limit. Nothing is kept that did not hash to its digest, and a
// crash at any point leaves either the whole blob or none of it.
//
// It is not a general registry: no deletion, no catalog, no tag listing,
// no cross-repository mount, no referrers API; blobs and manifests are
// shared by all repositories (content addressing makes that safe), tags
// are per repository.
package server
