// Package sealed is the format of sealed programs and data: a file
// encrypted under a fresh content key so that it can be stored anywhere
// (an OCI registry, a node's blob store) while only holders of the key can
// read it.
//
// A sealed file is an age v1 file (age-encryption.org/v1) whose header has
// exactly one recipient stanza, "-> cloister-v1" with no arguments and an
// empty body: the file key is not wrapped to anyone in the file, it is held
// out of band. That out-of-band file key is the content key: the owner
// keeps it in a key file and registers it with key brokers, which release
// it only to attested isolates. Everything else is age unchanged: the
// header MAC (HMAC-SHA-256 under a key derived from the content key), a
// 16-byte nonce, and age's STREAM payload (ChaCha20-Poly1305 over 64 KiB
// chunks, a chunk counter and a last-chunk flag in each nonce). So a wrong
// key is caught at the header, and a modified, truncated, extended or
// reordered ciphertext is caught at the first chunk that differs, before
// any of that chunk's plaintext is released.
//
// Sealing and opening stream: memory stays at a few chunks whatever the
// size. What is not hidden: the plaintext length (to within a chunk's
// 16-byte tag per 64 KiB) and that the file is a Cloister sealed file.
//
// This package is not for messages to a known recipient's public key (that
// is package seal, HPKE envelopes) and does not sign: a sealed file proves
// nothing about who sealed it. Policies pin the plaintext SHA-256, which is
// what makes a program the one the parties agreed on.
//
// The format and the key file are specified in docs/storage.md.
package sealed
