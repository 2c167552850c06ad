// Package keys holds a principal's (or a node's) long-term key pair: an
// Ed25519 key that signs requests and ledger entries, and an HPKE
// (MLKEM768-X25519) key that sealed data is encrypted to. It reads and writes
// the key file format of docs/keys.md and the text forms of the public
// halves ("ed25519:…", "hpke:…") that policies list.
//
// It is not a key store: one file holds one key pair, protected only by its
// file mode (0600; Load refuses files others can read). There is no
// passphrase encryption, rotation or revocation here; a policy names the
// keys it trusts, and replacing a key means writing a new policy.
package keys
