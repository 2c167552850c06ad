/*
 * cloister_host.h — host calls for C programs running in a Cloister isolate
 * (WASI preview 1, wasm32). Build with clang --target=wasm32-wasi.
 *
 * A host call asks the node that runs the program for something by name
 * ("cloister.sha256/v1") and waits for the answer. The node allows only
 * the calls the program's policy lists under "host_calls"; requests and
 * responses are bounded (1 MiB each unless the call says otherwise). The
 * ABI is the WebAssembly import module "cloister_host_v1" (docs/isolate.md,
 * "Host calls"); every argument is an i32.
 *
 *     uint8_t buf[64];
 *     uint32_t n;
 *     uint32_t st = cloister_host_call("cloister.sha256/v1", 18, data, len, buf, sizeof buf, &n);
 *     if (st == CLOISTER_HOST_SHORT_BUFFER) {       // longer than buf:
 *         uint8_t *big = malloc(n);                 // fetch it whole
 *         st = cloister_host_response(big, n, &n);
 *     }
 */
#ifndef CLOISTER_HOST_H
#define CLOISTER_HOST_H

#include <stddef.h>
#include <stdint.h>

/* Status codes. */
#define CLOISTER_HOST_OK 0           /* the response is in the buffer, its length at *resp_len */
#define CLOISTER_HOST_SHORT_BUFFER 1 /* longer than resp_cap: its length at *resp_len; fetch it with cloister_host_response */
#define CLOISTER_HOST_NOT_ALLOWED 2  /* the policy does not allow this call (or the node does not offer it) */
#define CLOISTER_HOST_TOO_LARGE 3    /* the request exceeds the call's limit */
#define CLOISTER_HOST_FAILED 4       /* the host could not answer: the buffer holds its message (cut to resp_cap), its full length at *resp_len */
#define CLOISTER_HOST_BAD_ARGUMENT 5 /* a pointer or length outside memory, or a bad name */
#define CLOISTER_HOST_NO_RESPONSE 6  /* cloister_host_response without a response kept from the last call */

/*
 * Makes the call `name` with the request, and writes the response to resp
 * (at most resp_cap bytes) and its length to *resp_len. Blocks until the
 * host answers. A response longer than resp_cap is kept until the next
 * call: fetch it with cloister_host_response.
 */
__attribute__((import_module("cloister_host_v1"), import_name("call")))
uint32_t cloister_host_call(const char *name, size_t name_len,
                            const void *req, size_t req_len,
                            void *resp, size_t resp_cap, uint32_t *resp_len);

/* Writes the response kept from the last call (see above). */
__attribute__((import_module("cloister_host_v1"), import_name("response")))
uint32_t cloister_host_response(void *resp, size_t resp_cap, uint32_t *resp_len);

#endif
