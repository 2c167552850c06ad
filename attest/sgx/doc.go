// Package sgx verifies Intel SGX DCAP quotes (ECDSA, quote versions 3 to
// 5) offline, with the collateral Intel's PCS publishes.
//
// The verification itself lives in package dcap, which TDX shares; see
// dcap.Verify for the list of checks. Evidence.Data is the raw quote.
// Evidence.Collateral may hold one item: the collateral JSON in the shape
// dcap.ParseCollateralJSON documents (PCK CRL and its issuer chain, root CA
// CRL, TCB info and QE identity with signatures and issuer chains). With
// it, Claims.TCBStatus and Claims.Advisories come from Intel's TCB info
// and QE identity; without it only the quote signature, the QE report and
// the PCK chain to the Intel SGX Root CA are checked, TCBStatus is empty
// and a warning says so.
//
// Claims.Measurement is MRENCLAVE; Measurements has "mrenclave" and
// "mrsigner"; SVN has "isv_svn", "isv_prod_id", "pce_svn", "qe_svn" and
// "sgx_tcb_comp1".."sgx_tcb_comp16" (from the PCK certificate). An enclave
// whose attributes have DEBUG (flags bit 1) is refused with
// attest.ErrDebug unless VerifyOptions.AllowDebug.
//
// There is no SGX attester: Cloister's isolates do not run as SGX
// enclaves. This package verifies other systems' SGX evidence.
package sgx
