// Package attest holds benchmarks of Cloister's attestation classes:
// verifications per second for software, tpm, nitro, ear and cca evidence
// (real conformance evidence where it exists), and evidence generation
// latency for the software and tpm (swtpm) attesters. Figures are in
// docs/performance-attest.md. It contains no production code.
package attest
