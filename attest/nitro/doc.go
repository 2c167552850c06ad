// Package nitro verifies and produces AWS Nitro Enclaves attestation
// documents: a COSE_Sign1 (ES384) over a CBOR document holding the enclave's
// PCRs, optional user data, nonce and public key, a leaf certificate and the
// CA bundle that chains it to the AWS Nitro Enclaves Root G1.
//
// The verifier is offline: the chain is checked against the embedded AWS
// root (package roots) at VerifyOptions.Now. Debug-mode enclaves (PCR0, 1
// and 2 all zero) are refused unless debug is allowed. The attester talks to
// /dev/nsm and only works inside a Nitro enclave; elsewhere it fails to open
// the device. It is not a client for the AWS KMS or any other AWS service.
package nitro
