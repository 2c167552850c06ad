// Package swtpm starts a private swtpm (the software TPM 2.0 from the
// swtpm project, a Debian package) on loopback, for tests, benchmarks and
// local development of the tpm attestation class.
//
// It is not for production: a software TPM's keys live in a state
// directory any root user can read, so its quotes prove nothing about the
// machine. Use /dev/tpmrm0 there.
package swtpm
