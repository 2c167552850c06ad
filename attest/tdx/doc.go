// Package tdx verifies Intel TDX quotes offline and produces them inside
// TDX guests.
//
// Evidence.Data is the raw quote (version 4 or 5). Two collateral shapes
// are accepted in Evidence.Collateral:
//
//   - one DCAP collateral JSON (the dcap-qvl shape documented in package
//     dcap): the quote is verified by package dcap, which handles v4 and
//     v5 quotes, TDX module identities and TCB status;
//   - the raw responses of Intel's PCS, one per item, as go-tdx-guest
//     consumes them: the TCB info response ({"tcbInfo":…,"signature":…}),
//     the QE identity response ({"enclaveIdentity":…,"signature":…}), the
//     PCK CRL and the root CA CRL (DER or PEM), and the PEM issuer chains
//     (TCB Signing chain for TCB info and QE identity, the PCK Platform or
//     Processor CA chain for the PCK CRL). A v4 quote is then verified by
//     go-tdx-guest's verify package, fed these items through an in-memory
//     getter (nothing touches the network); TCB info and QE identity must
//     come together, and so must the two CRLs. A lone self-signed root in
//     the collateral is ignored (roots come from VerifyOptions).
//
// In both cases the quote signature, the QE report and the PCK chain are
// first checked by package dcap, which gives failures their precise
// attest error kind; with PCS responses go-tdx-guest then repeats those
// checks and adds the collateral ones, so two independent implementations
// must agree. Without any collateral only the quote signature, QE report
// and PCK chain are checked; TCBStatus is empty and a warning says so.
//
// A v5 quote with PCS responses is verified by package dcap as well:
// go-tdx-guest only parses v4.
//
// Claims.Measurement is MRTD; Measurements has mrtd, rtmr0–rtmr3, mrseam,
// mrsignerseam, mrconfigid, mrowner, mrownerconfig (and mrservicetd for
// TDX 1.5 bodies); SVN has tee_tcb_svn0–15, pce_svn, qe_svn and the 16 SGX
// TCB components. A TD whose attributes have DEBUG (bit 0) is refused with
// attest.ErrDebug unless VerifyOptions.AllowDebug.
//
// The Attester runs only inside a TDX guest (configfs-tsm or /dev/tdx_guest).
package tdx
