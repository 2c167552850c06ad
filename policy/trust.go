package policy

import (
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/keys"
)

// ReferenceValues turns the policy's isolate entry for class into what the
// attest package judges evidence with: reference values (measurements,
// SVN floors, TCB statuses, debug, hardware requirement) and verification
// options (pinned keys, extra roots). The caller adds what is specific to
// one attestation: ReportData, Nonce, MaxAge, Now. It fails if the policy
// does not accept class at all.
func (p *Policy) ReferenceValues(class attest.Class) (attest.ReferenceValues, attest.VerifyOptions, error) {
	iso, ok := p.Isolate(string(class))
	if !ok {
		var have []string
		for _, i := range p.Isolates {
			have = append(have, i.Class)
		}
		return attest.ReferenceValues{}, attest.VerifyOptions{}, fmt.Errorf("policy %q does not accept isolate class %q (it accepts: %s)", p.Name, class, strings.Join(have, ", "))
	}
	ref := attest.ReferenceValues{
		AllowDebug:      iso.AllowDebug,
		RequireHardware: hardwareTEE[iso.Class],
		AcceptTCBStatus: slices.Clone(iso.AcceptTCBStatus),
	}
	if len(iso.MinSVN) > 0 {
		ref.MinSVN = maps.Clone(iso.MinSVN)
	}
	for _, m := range iso.Measurements {
		b, err := hex.DecodeString(m)
		if err != nil {
			return attest.ReferenceValues{}, attest.VerifyOptions{}, fmt.Errorf("policy isolate %s: measurement %q: %v", class, m, err)
		}
		ref.Measurements = append(ref.Measurements, b)
	}
	if iso.Class == string(attest.ClassSEVSNP) {
		v := uint32(0)
		if iso.MaxVMPL != nil {
			v = uint32(*iso.MaxVMPL)
		}
		ref.MaxVMPL = &v
	}
	for _, set := range iso.PCRs {
		m := make(map[int][]byte, len(set))
		for k, v := range set {
			i, err := pcrIndex(k)
			if err != nil {
				return attest.ReferenceValues{}, attest.VerifyOptions{}, fmt.Errorf("policy isolate %s: pcrs: %v", class, err)
			}
			if m[i], err = hex.DecodeString(v); err != nil {
				return attest.ReferenceValues{}, attest.VerifyOptions{}, fmt.Errorf("policy isolate %s: pcrs: PCR %d: %v", class, i, err)
			}
		}
		ref.PCRs = append(ref.PCRs, m)
	}
	opts := attest.VerifyOptions{AllowDebug: iso.AllowDebug}
	for _, k := range iso.PlatformKeys {
		pub, err := parsePlatformKey(iso.Class, k)
		if err != nil {
			return attest.ReferenceValues{}, attest.VerifyOptions{}, fmt.Errorf("policy isolate %s: %v", class, err)
		}
		opts.TrustedKeys = append(opts.TrustedKeys, pub)
	}
	for _, r := range iso.Roots {
		certs, err := parseRoot(r)
		if err != nil {
			return attest.ReferenceValues{}, attest.VerifyOptions{}, fmt.Errorf("policy isolate %s: %v", class, err)
		}
		opts.Roots = append(opts.Roots, certs...)
	}
	return ref, opts, nil
}

// hardwareTEE lists the classes whose memory is protected from the host by
// the CPU. A TPM quote proves what was booted, not that memory is hidden
// (the tpm verifier says HardwareProtected false), so tpm is not here.
var hardwareTEE = map[string]bool{"sev-snp": true, "tdx": true, "sgx": true, "nitro": true}

// parsePlatformKey reads one platform_keys entry: "ed25519:…" for the
// software class, one PEM PUBLIC KEY block for tpm (attestation keys are RSA
// or ECDSA).
func parsePlatformKey(class, s string) (crypto.PublicKey, error) {
	if class != "tpm" {
		k, err := keys.ParseSigningKey(s)
		if errors.Is(err, keys.ErrWeakKey) {
			return nil, fmt.Errorf("refused: %s", trimKeysErr(err))
		}
		if err != nil {
			return nil, fmt.Errorf("not an ed25519 key: %s", trimKeysErr(err))
		}
		return k, nil
	}
	if !strings.HasPrefix(strings.TrimSpace(s), "-----BEGIN PUBLIC KEY-----") {
		return nil, fmt.Errorf("a tpm platform key is the attestation key as one PEM PUBLIC KEY block")
	}
	ta, err := attest.ParseTrustAnchors("platform key", []byte(s))
	if err != nil {
		return nil, err
	}
	if len(ta.Keys) != 1 || len(ta.Roots) != 0 {
		return nil, fmt.Errorf("must hold exactly one PEM PUBLIC KEY block")
	}
	return ta.Keys[0], nil
}

// parseRoot reads one roots entry: PEM CERTIFICATE blocks.
func parseRoot(s string) ([]*x509.Certificate, error) {
	if !strings.HasPrefix(strings.TrimSpace(s), "-----BEGIN CERTIFICATE-----") {
		return nil, fmt.Errorf("must be PEM CERTIFICATE blocks")
	}
	ta, err := attest.ParseTrustAnchors("root", []byte(s))
	if err != nil {
		return nil, err
	}
	if len(ta.Keys) != 0 || len(ta.Roots) == 0 {
		return nil, fmt.Errorf("must hold only PEM CERTIFICATE blocks")
	}
	return ta.Roots, nil
}
