// Package attesthw benchmarks Cloister's hardware-evidence verifiers
// (SEV-SNP, SGX and TDX DCAP, RA-TLS) on the conformance samples, and
// compares the TDX quote check with go-tdx-guest's on the same quote.
// It holds no code used elsewhere. Figures: docs/performance-attest-hw.md.
package attesthw
