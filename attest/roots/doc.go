// Package roots embeds the vendor root certificates Cloister trusts by
// default: AMD's SEV ARK/ASK for Milan and Genoa, the Intel SGX Root CA
// (SGX and TDX DCAP), and the AWS Nitro Enclaves Root G1.
//
// It is for verifiers that chain evidence to a vendor; callers may add
// or replace roots through attest.VerifyOptions. It is not a general CA
// store and holds nothing that signs evidence itself.
package roots
