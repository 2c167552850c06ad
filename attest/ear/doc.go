// Package ear issues and verifies EAT Attestation Results (EAR, profile
// "tag:github.com,2023:veraison/ear"): JWTs in which a verifier states, per
// attested component ("submodule"), an overall status (affirming, warning,
// contraindicated) and an AR4SI trustworthiness vector.
//
// Cloister issues an EAR after verifying and validating evidence, so that a
// party that trusts the verifier's key need not verify hardware evidence
// itself; Cloister's own claims travel under the "cloister" key of each
// submodule. The JWS code is written here on crypto/ecdsa and crypto/ed25519
// and accepts only ES256, ES384 and EdDSA: "none", HMAC and RSA tokens are
// refused. It is not a general JWT library.
package ear
