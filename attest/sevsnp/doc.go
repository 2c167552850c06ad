// Package sevsnp verifies AMD SEV-SNP attestation reports offline and
// produces them inside SNP guests.
//
// Verification follows go-sev-guest's split: abi parses the 1184-byte
// report, verify checks its ECDSA-P384 signature by the VCEK (or VLEK) and
// the certificate chain VCEK → ASK → ARK, and validate checks that the
// report agrees with its certificate (reported TCB equals the VCEK's TCB,
// CHIP_ID equals the VCEK's HWID, committed ≤ current firmware). Nothing is
// fetched from AMD's key distribution service: every certificate must be in
// Evidence.Collateral or the trusted roots.
//
// Evidence.Data is exactly one raw report (abi.ReportSize bytes); a report
// followed by the host's certificate table (the GET_EXT_REPORT / configfs
// "auxblob" shape) is also accepted, and the certificates in that table
// are used as collateral. Each element of Evidence.Collateral may be:
//   - one or more PEM certificates (the KDS cert_chain file holds ASK then
//     ARK), or one DER certificate: VCEK/VLEK ("SEV-VCEK", "SEV-VLEK"),
//     ASK/ASVK ("SEV-<product>", "SEV-VLEK-<product>"), ARK ("ARK-<product>");
//   - a CRL, DER or PEM ("X509 CRL"), as served by the KDS for a product
//     line; when given it must be signed by the trusted ARK and current,
//     and the certificates it can speak for (the ASK, and the VCEK should
//     its issuer match) must not be on it.
//
// An ARK is trusted only if it is one of the roots: AMD's published ARKs
// for Milan and Genoa (package roots) and Turin (as go-sev-guest embeds
// it), unless VerifyOptions.ReplaceRoots, plus VerifyOptions.Roots. An ARK found in the
// collateral is used only when it equals a trusted root. ASKs from the
// collateral are intermediates and must chain to a trusted ARK.
//
// A report whose guest policy allows debugging (bit 19) is refused with
// attest.ErrDebug unless VerifyOptions.AllowDebug; Claims.Debug is set from
// that bit either way. SEV-SNP has no TCB status: Claims.TCBStatus is empty
// and the reported TCB components are in Claims.SVN ("bootloader", "tee",
// "snp", "microcode", and "guest_svn"; Turin reports, recognised by their
// CPUID field, add "fmc" and use Turin's TCB_VERSION layout).
//
// This package does not judge measurements or report data: attest.Validate
// does that with the Claims. The Attester runs only inside an SEV-SNP
// guest with configfs-tsm or /dev/sev-guest.
package sevsnp
