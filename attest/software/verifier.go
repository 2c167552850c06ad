package software

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
)

// NoHardwareWarning is attached to every set of software claims.
const NoHardwareWarning = "no hardware protection: the node operator can read and alter the isolate"

// MaxClockSkew is how far in the future a statement's time may lie before
// it is refused.
const MaxClockSkew = 5 * time.Minute

// Verifier checks software evidence against pinned platform keys.
type Verifier struct{}

func init() { attest.Register(Verifier{}) }

// Class returns attest.ClassSoftware.
func (Verifier) Class() attest.Class { return attest.ClassSoftware }

// Verify checks that the statement is signed by one of opts.TrustedKeys
// (Ed25519 platform keys). Software evidence carries no chain to any
// authority, so with no pinned key nothing can be trusted and it fails
// with attest.ErrUntrustedSigner.
func (Verifier) Verify(ctx context.Context, ev *attest.Evidence, opts attest.VerifyOptions) (*attest.Claims, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: no evidence", attest.ErrMalformed)
	}
	env, ps, err := ParseEnvelope(ev.Data)
	if err != nil {
		return nil, err
	}
	trusted := false
	for _, k := range opts.TrustedKeys {
		if pk, ok := asEd25519(k); ok && pk.Equal(ps.PlatformKey) {
			trusted = true
			break
		}
	}
	if !trusted {
		if len(opts.TrustedKeys) == 0 {
			return nil, fmt.Errorf("%w: software evidence is signed by platform key %s, and no platform key is pinned to compare it with", attest.ErrUntrustedSigner, protocol.FormatEd25519Key(ps.PlatformKey))
		}
		return nil, fmt.Errorf("%w: software evidence is signed by platform key %s, which is not among the %d pinned keys", attest.ErrUntrustedSigner, protocol.FormatEd25519Key(ps.PlatformKey), len(opts.TrustedKeys))
	}
	if !ed25519.Verify(ps.PlatformKey, signedMessage(env.Statement), env.Signature) {
		return nil, fmt.Errorf("%w: software statement signature does not verify with platform key %s", attest.ErrSignature, protocol.FormatEd25519Key(ps.PlatformKey))
	}
	if now := opts.Time(); ps.Time.After(now.Add(MaxClockSkew)) {
		return nil, fmt.Errorf("%w: software statement is dated %s, after the verification time %s", attest.ErrExpired, ps.Time.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	return &attest.Claims{
		Class:             attest.ClassSoftware,
		Format:            Format,
		Measurement:       append([]byte(nil), ps.RuntimeMeasurement[:]...),
		Measurements:      map[string][]byte{"runtime": append([]byte(nil), ps.RuntimeMeasurement[:]...)},
		ReportData:        append([]byte(nil), ps.ReportData[:]...),
		HardwareProtected: false,
		Advisories:        []string{},
		IssuedAt:          ps.Time,
		Signer:            protocol.FormatEd25519Key(ps.PlatformKey),
		Warnings:          []string{NoHardwareWarning},
		Extra:             map[string]any{"runtime_measurement": hex.EncodeToString(ps.RuntimeMeasurement[:])},
	}, nil
}

func asEd25519(k any) (ed25519.PublicKey, bool) {
	switch pk := k.(type) {
	case ed25519.PublicKey:
		return pk, len(pk) == ed25519.PublicKeySize
	case *ed25519.PublicKey:
		if pk != nil {
			return *pk, len(*pk) == ed25519.PublicKeySize
		}
	}
	return nil, false
}
