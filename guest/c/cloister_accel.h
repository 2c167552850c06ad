/*
 * cloister_accel.h — host-accelerated primitives for C programs running in
 * a Cloister isolate (WASI preview 1, wasm32). Build with
 * clang --target=wasm32-wasi.
 *
 * SHA-256 and AES-GCM computed natively by the isolate's worker, with the
 * CPU's SHA and AES instructions, on the program's own memory: the same
 * bytes as a portable implementation, many times faster than one compiled
 * to WebAssembly. The ABI is the WebAssembly import module
 * "cloister_accel_v1" (docs/isolate.md, "Host primitives"); every argument
 * and result is an i32. A primitive only reads and writes the ranges it is
 * given, all within the program's memory, and runs inside the run's
 * deadline; the run report counts the calls ("host_primitives").
 *
 *     uint8_t digest[32];
 *     cloister_sha256(data, len, digest);
 *
 * Rust: declare the same functions in an
 * #[link(wasm_import_module = "cloister_accel_v1")] extern "C" block, with
 * u32 for every size and pointer.
 */
#ifndef CLOISTER_ACCEL_H
#define CLOISTER_ACCEL_H

#include <stddef.h>
#include <stdint.h>

/* Status codes. */
#define CLOISTER_ACCEL_OK 0          /* done */
#define CLOISTER_ACCEL_BAD_ARGUMENT 1 /* a range outside memory, or a wrong key size */
#define CLOISTER_ACCEL_AUTH_FAILED 2  /* aes_gcm_open: the message is not authentic (out is zeroed);
                                        ed25519_verify: the signature is not valid */
#define CLOISTER_ACCEL_NOT_DETERMINISTIC 3 /* matmul_f64 in a deterministic run: float results may
                                              differ between CPUs, so compute it yourself */
#define CLOISTER_ACCEL_BEYOND_LIMITS 4 /* matmul_f64: the product is beyond the run's deadline */

/* Writes the 32-byte SHA-256 digest of data[0..len) to out. */
__attribute__((import_module("cloister_accel_v1"), import_name("sha256")))
uint32_t cloister_sha256(const void *data, size_t len, uint8_t out[32]);

/*
 * Streaming SHA-256: init writes a fresh state, each update advances it over
 * data[0..len), final writes the digest of everything so far to out and
 * leaves the state as it was. The state is opaque: only what init and
 * update wrote is accepted (CLOISTER_ACCEL_BAD_ARGUMENT otherwise).
 */
typedef struct { uint8_t opaque[128]; } cloister_sha256_state;

__attribute__((import_module("cloister_accel_v1"), import_name("sha256_init")))
uint32_t cloister_sha256_init(cloister_sha256_state *state);

__attribute__((import_module("cloister_accel_v1"), import_name("sha256_update")))
uint32_t cloister_sha256_update(cloister_sha256_state *state, const void *data, size_t len);

__attribute__((import_module("cloister_accel_v1"), import_name("sha256_final")))
uint32_t cloister_sha256_final(const cloister_sha256_state *state, uint8_t out[32]);

/*
 * AES-GCM with a 16-, 24- or 32-byte key and a 12-byte nonce. seal writes
 * in_len+16 bytes (ciphertext, then the tag) to out; open checks and
 * decrypts in_len bytes (ciphertext and tag) into in_len-16 bytes at out.
 * in and out may overlap; in place (in == out) or into a range of its own
 * the message is not copied.
 */
__attribute__((import_module("cloister_accel_v1"), import_name("aes_gcm_seal")))
uint32_t cloister_aes_gcm_seal(const uint8_t *key, size_t key_len, const uint8_t nonce[12],
                               const void *in, size_t in_len, const void *ad, size_t ad_len, void *out);

__attribute__((import_module("cloister_accel_v1"), import_name("aes_gcm_open")))
uint32_t cloister_aes_gcm_open(const uint8_t *key, size_t key_len, const uint8_t nonce[12],
                               const void *in, size_t in_len, const void *ad, size_t ad_len, void *out);

/* Ed25519 (RFC 8032): CLOISTER_ACCEL_OK when sig is a valid signature of
 * msg[0..msg_len) by the 32-byte public key pub, else
 * CLOISTER_ACCEL_AUTH_FAILED. */
__attribute__((import_module("cloister_accel_v1"), import_name("ed25519_verify")))
uint32_t cloister_ed25519_verify(const uint8_t pub[32], const void *msg, size_t msg_len, const uint8_t sig[64]);

/* Sorts n 64-bit integers at p in place, in increasing order, unsigned
 * or signed. */
__attribute__((import_module("cloister_accel_v1"), import_name("sort_u64")))
uint32_t cloister_sort_u64(uint64_t *p, size_t n);

__attribute__((import_module("cloister_accel_v1"), import_name("sort_i64")))
uint32_t cloister_sort_i64(int64_t *p, size_t n);

/*
 * c (m×n) = a (m×k) · b (k×n), row-major doubles, by the i-k-j loop with
 * every product rounded before it is added (the bits of that loop compiled
 * without fused multiply-add). c must not overlap a or b
 * (CLOISTER_ACCEL_BAD_ARGUMENT). Refused in deterministic runs
 * (CLOISTER_ACCEL_NOT_DETERMINISTIC, c untouched) and for products beyond
 * the run's deadline (CLOISTER_ACCEL_BEYOND_LIMITS, c possibly partly
 * written).
 */
__attribute__((import_module("cloister_accel_v1"), import_name("matmul_f64")))
uint32_t cloister_matmul_f64(const double *a, const double *b, double *c, size_t m, size_t k, size_t n);

#endif
