// Package dcap parses and verifies Intel DCAP ECDSA quotes — SGX quote v3,
// and SGX or TDX quotes v4 and v5 — and the collateral Intel publishes for
// them, offline. It is the shared engine of packages sgx and tdx.
//
// Parsing (ParseQuote, ParseCollateralJSON, ParseTCBInfo,
// ParseQEIdentity, ParsePCKExtensions) only decodes. Verify checks
// signatures and chains and derives the TCB status; see its documentation
// for the exact list. The trust anchor is the Intel SGX Root CA embedded in
// package roots (unless VerifyOptions.ReplaceRoots), plus
// VerifyOptions.Roots; the PCK chain comes from certification data type 5
// in the quote (a quote carrying only PPID data, types 1–4, cannot be
// verified offline and is refused).
//
// Collateral JSON is the shape dcap-qvl's QuoteCollateralV3 serialises to:
// one object whose members are strings — pck_crl_issuer_chain,
// tcb_info_issuer_chain and qe_identity_issuer_chain (PEM), root_ca_crl
// and pck_crl (hex DER), tcb_info and qe_identity (the exact JSON text
// Intel signed), tcb_info_signature and qe_identity_signature (hex, 64-byte
// r‖s). All members are required.
//
// TCB levels are matched the way Intel's verification library and PCS
// documentation describe: per component, in the order Intel lists them
// (highest first). Where TEE TCB SVN[1] (the TDX module major version) is
// non-zero, TEE TCB SVN bytes 0–1 are judged by the matching TDX module
// identity ("TDX_%02X") instead of the platform level. Platform, QE and
// TDX module statuses are merged as Intel does (an OutOfDate component
// makes UpToDate/SWHardeningNeeded OutOfDate and the Configuration*
// statuses OutOfDateConfigurationNeeded; Revoked wins). A Revoked result
// is an error.
//
// This package does not fetch collateral from Intel's PCS and does not
// judge measurements: attest.Validate does that.
package dcap
