// Package tpm implements the "tpm" attestation class: a TPM 2.0 quote, by a
// restricted attestation key (AK), over PCRs that include the cloister
// runtime measured into PCR 23, with the caller's report data as the quote's
// qualifying data.
//
// The attester works against any TPM 2.0: /dev/tpmrm0, a vTPM, or swtpm over
// TCP. The verifier checks the AK (pinned in VerifyOptions.TrustedKeys, or
// certified by an X.509 AK certificate chaining to VerifyOptions.Roots), the
// quote signature, the PCR digest against the PCR values, the qualifying
// data, and replays a TCG event log when one is given. It also verifies the
// JSON test-data shape of go-attestation (AK public, quote, PCRs, raw event
// log) so quotes produced by other systems can be checked.
//
// What it does not do: a quote proves which PCR values a genuine TPM holds;
// it does not protect the isolate's memory from the node operator, and PCR 23
// is extended by the cloister process itself (software running on the OS),
// so its value is only as trustworthy as the boot chain measured in PCRs 0-7.
// AKs are trusted by pinning, or by an AK certificate that an enrolment CA
// issues after credential activation against the TPM's EK certificate
// (enroll.go).
package tpm
