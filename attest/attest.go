package attest

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Class names what protects an isolate, and so which evidence format it
// produces. RA-TLS and EAR are not classes: they are envelopes (a
// certificate carrying evidence, a signed attestation result) handled by
// their own verifiers under the Format names below.
type Class string

const (
	ClassSoftware Class = "software" // sandbox only; the node operator is trusted
	ClassTPM      Class = "tpm"      // TPM 2.0 quote over the measured runtime
	ClassSEVSNP   Class = "sev-snp"  // AMD SEV-SNP attestation report
	ClassTDX      Class = "tdx"      // Intel TDX quote
	ClassSGX      Class = "sgx"      // Intel SGX DCAP quote
	ClassNitro    Class = "nitro"    // AWS Nitro Enclaves attestation document
	ClassRATLS    Class = "ra-tls"   // interoperable RA-TLS certificate (envelope)
	ClassEAR      Class = "ear"      // EAT Attestation Result JWT (envelope)
	// ClassCCA is Arm CCA evidence (platform and realm tokens). Cloister
	// verifies it but has no attester for it.
	ClassCCA Class = "cca"
)

// ReportDataSize is the size of the report data every attester binds.
const ReportDataSize = 64

// Evidence is what an attester produced, in its native encoding, plus the
// endorsements a verifier needs to check it offline.
type Evidence struct {
	Class Class `json:"class"`
	// Data is the signed evidence itself: an SNP report, a TDX/SGX quote,
	// a Nitro COSE_Sign1 document, a TPM quote bundle, a software statement.
	Data []byte `json:"data"`
	// Collateral holds endorsements in whatever encoding the format uses:
	// certificates (PEM or DER), CRLs, collateral JSON, event logs. Each
	// verifier documents what it looks for.
	Collateral [][]byte `json:"collateral,omitempty"`
}

// Claims is what a verifier established about the attester after checking
// the evidence's signatures and chains. Nothing in Claims has been judged
// against reference values yet: that is Validate's job.
type Claims struct {
	Class  Class  `json:"class"`
	Format string `json:"format"` // e.g. "sev-snp-report-v2", "tdx-quote-v4"

	// Measurement is the class's primary launch measurement: SNP
	// MEASUREMENT, TDX MRTD, SGX MRENCLAVE, Nitro PCR0, CCA RIM, the
	// cloister runtime hash (software; tpm bundles, where it is replayed
	// from PCR 23), or the PCR digest of a foreign TPM quote.
	Measurement []byte `json:"measurement"`
	// Measurements holds every named measurement register the evidence
	// carries ("mrsigner", "rtmr0", "pcr4", "host_data", ...).
	Measurements map[string][]byte `json:"measurements,omitempty"`

	ReportData []byte `json:"report_data"`          // bound by the attester
	Nonce      []byte `json:"nonce,omitempty"`      // formats with a separate nonce (Nitro, TPM qualifying data)
	PublicKey  []byte `json:"public_key,omitempty"` // formats that carry a key (Nitro, RA-TLS SPKI)

	// HardwareProtected is false for classes whose isolation rests on the
	// node operator's honesty (software).
	HardwareProtected bool `json:"hardware_protected"`
	Debug             bool `json:"debug"`
	// VMPL is the SEV-SNP virtual machine privilege level that asked for
	// the report (0 is the most privileged software in the VM, 1–3 run
	// under it and may be watched by it); nil for other classes.
	VMPL *uint32 `json:"vmpl,omitempty"`

	// TCBStatus is the platform's TCB standing as the format reports it
	// ("UpToDate", "OutOfDate", "ConfigurationAndSWHardeningNeeded", ...),
	// empty when the format has none.
	TCBStatus  string            `json:"tcb_status"`
	Advisories []string          `json:"advisories"`
	SVN        map[string]uint64 `json:"svn,omitempty"` // security version numbers by component

	// IssuedAt is the evidence's own timestamp, zero when it has none.
	IssuedAt time.Time `json:"issued_at,omitempty"`
	// Signer identifies what signed the evidence (leaf certificate subject,
	// key fingerprint).
	Signer   string   `json:"signer,omitempty"`
	Warnings []string `json:"warnings"`

	// Extra carries format-specific values worth showing (chip id, module
	// id, platform info); it is never used for decisions.
	Extra map[string]any `json:"extra,omitempty"`
}

// VerifyOptions configures signature and chain verification.
type VerifyOptions struct {
	// Now is the verification time for certificate, CRL and collateral
	// validity windows. Zero means time.Now().
	Now time.Time
	// Roots are trusted root certificates. They are added to the format's
	// built-in roots unless ReplaceRoots is set.
	Roots        []*x509.Certificate
	ReplaceRoots bool
	// TrustedKeys are pinned public keys: software platform keys, TPM
	// attestation keys, EAR verifier keys.
	TrustedKeys []crypto.PublicKey
	// AllowDebug lets evidence from debug-enabled isolates through; without
	// it a verifier refuses them (their memory is readable by the host).
	AllowDebug bool
}

// Time returns the verification time.
func (o VerifyOptions) Time() time.Time {
	if o.Now.IsZero() {
		return time.Now()
	}
	return o.Now
}

// Verifier checks one class of evidence: parse, then signatures and chains.
type Verifier interface {
	Class() Class
	Verify(ctx context.Context, ev *Evidence, opts VerifyOptions) (*Claims, error)
}

// Attester produces evidence binding reportData.
type Attester interface {
	Class() Class
	Attest(ctx context.Context, reportData [ReportDataSize]byte) (*Evidence, error)
}

// Errors a caller may want to tell apart. Verifiers wrap them with detail.
var (
	ErrMalformed       = errors.New("malformed evidence")
	ErrSignature       = errors.New("signature invalid")
	ErrChain           = errors.New("certificate chain invalid")
	ErrExpired         = errors.New("outside validity window")
	ErrRevoked         = errors.New("revoked")
	ErrDebug           = errors.New("debug mode isolate refused")
	ErrMeasurement     = errors.New("measurement not allowed")
	ErrReportData      = errors.New("report data mismatch")
	ErrNonce           = errors.New("nonce mismatch")
	ErrTCB             = errors.New("TCB not acceptable")
	ErrStale           = errors.New("evidence too old")
	ErrUnknownClass    = errors.New("unknown evidence class")
	ErrUntrustedSigner = errors.New("signer not trusted")
)

var (
	registryMu sync.RWMutex
	registry   = map[Class]Verifier{}
)

// Registered lists the classes with a verifier, sorted.
func Registered() []Class {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return registeredLocked()
}

// Register makes v the verifier for its class. Sub-packages call it from
// init; registering a class twice panics (a programming error).
func Register(v Verifier) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[v.Class()]; dup {
		panic(fmt.Sprintf("attest: verifier for %q registered twice", v.Class()))
	}
	registry[v.Class()] = v
}

// VerifierFor returns the registered verifier of class c.
func VerifierFor(c Class) (Verifier, error) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	v, ok := registry[c]
	if !ok {
		return nil, fmt.Errorf("%w: %q (registered: %v)", ErrUnknownClass, c, registeredLocked())
	}
	return v, nil
}

func registeredLocked() []Class {
	out := make([]Class, 0, len(registry))
	for c := range registry {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Verify looks up the verifier for ev.Class and runs it.
func Verify(ctx context.Context, ev *Evidence, opts VerifyOptions) (*Claims, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: no evidence", ErrMalformed)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	v, err := VerifierFor(ev.Class)
	if err != nil {
		return nil, err
	}
	return v.Verify(ctx, ev, opts)
}
