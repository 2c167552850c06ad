// Package ratls reads, verifies and issues interoperable RA-TLS
// certificates: X.509 certificates whose extension 2.23.133.5.4.9 (TCG
// DICE conceptual message wrapper) carries attestation evidence bound to
// the certificate's own public key, so a TLS peer can check what it talks
// to during the handshake.
//
// The format follows the CCC interoperable RA-TLS specifications: the
// extension value is a tagged CBOR array. Tag 60000 (Intel TEE quote)
// wraps [quote, claims-buffer]; claims-buffer is a CBOR map with a
// "pubkey-hash" claim (a CoSWID hash-entry [alg, value] over the DER
// SubjectPublicKeyInfo; SHA-256 = 1, SHA-384 = 7, SHA-512 = 8) and an
// optional "nonce"; the quote's report data begins with SHA-256 of the
// claims buffer. The endorsements extension (2.23.133.5.4.2) is not
// interpreted: collateral is passed in Evidence.Collateral instead.
//
// Verification (VerifyCertificate, and the registered "ra-tls" verifier)
// checks the certificate's validity window at the verification time, its
// signature (self-signed, or by one of VerifyOptions.Roots), that the
// pubkey-hash equals the hash of the certificate's SPKI, that report data
// [0:32] equals SHA-256(claims-buffer), and the embedded evidence with the
// verifier of its class (sgx or tdx for tag 60000), which refuses debug
// isolates unless VerifyOptions.AllowDebug. Without collateral an Intel
// quote's TCB status cannot be determined; its claims carry a warning.
//
// Evidence of classes that have no registered CBOR tag (Cloister's
// software and tpm classes, SEV-SNP, Nitro) is carried under the
// unregistered private tag CloisterTag as [class, evidence, claims-buffer,
// [collateral...]]. Other RA-TLS verifiers will not understand those
// certificates; Cloister's own will. Certificates from SGX or TDX quotes
// use tag 60000 and are interoperable.
//
// This package does not run a TLS server or manage keys; ClientConfig
// gives a crypto/tls configuration that verifies the peer's RA-TLS
// certificate.
package ratls
