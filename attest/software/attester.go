package software

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
)

// Attester signs software evidence with the node's platform key.
type Attester struct {
	priv        ed25519.PrivateKey
	measurement [32]byte
	measured    bool
	now         func() time.Time
}

// Option adjusts an Attester.
type Option func(*Attester)

// WithMeasurement sets the runtime measurement instead of hashing the
// running executable (for embedding cloister in another binary, and tests).
func WithMeasurement(m [32]byte) Option {
	return func(a *Attester) { a.measurement, a.measured = m, true }
}

// WithClock sets the clock that timestamps statements.
func WithClock(now func() time.Time) Option {
	return func(a *Attester) { a.now = now }
}

// NewAttester returns an attester signing with priv. Unless WithMeasurement
// is given, the runtime measurement is the SHA-256 of the running
// executable (/proc/self/exe), computed once per process.
func NewAttester(priv ed25519.PrivateKey, opts ...Option) (*Attester, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("software attester: platform key is %d bytes, want an Ed25519 private key of %d", len(priv), ed25519.PrivateKeySize)
	}
	a := &Attester{priv: priv, now: time.Now}
	for _, o := range opts {
		o(a)
	}
	if !a.measured {
		m, err := RuntimeMeasurement()
		if err != nil {
			return nil, err
		}
		a.measurement = m
	}
	return a, nil
}

var (
	runtimeOnce sync.Once
	runtimeHash [32]byte
	runtimeErr  error
)

// RuntimeMeasurement returns SHA-256 of the running executable. The file
// is read through /proc/self/exe, which names the binary the kernel mapped
// even if its path was replaced since start.
func RuntimeMeasurement() ([32]byte, error) {
	runtimeOnce.Do(func() {
		path := "/proc/self/exe"
		if _, err := os.Stat(path); err != nil {
			if path, err = os.Executable(); err != nil {
				runtimeErr = fmt.Errorf("software attester: locating the running executable: %w", err)
				return
			}
		}
		f, err := os.Open(path)
		if err != nil {
			runtimeErr = fmt.Errorf("software attester: measuring the running executable: %w", err)
			return
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			runtimeErr = fmt.Errorf("software attester: measuring the running executable: %w", err)
			return
		}
		copy(runtimeHash[:], h.Sum(nil))
	})
	return runtimeHash, runtimeErr
}

// Class returns attest.ClassSoftware.
func (a *Attester) Class() attest.Class { return attest.ClassSoftware }

// PublicKey returns the platform public key that verifiers must pin.
func (a *Attester) PublicKey() ed25519.PublicKey {
	return a.priv.Public().(ed25519.PublicKey)
}

// Measurement returns the runtime measurement the attester signs.
func (a *Attester) Measurement() [32]byte { return a.measurement }

// Attest signs a statement binding reportData. The evidence's Data is the
// JSON envelope described in statement.go.
func (a *Attester) Attest(ctx context.Context, reportData [attest.ReportDataSize]byte) (*attest.Evidence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st := Statement{
		Version:            1,
		Class:              string(attest.ClassSoftware),
		RuntimeMeasurement: hex.EncodeToString(a.measurement[:]),
		ReportData:         hex.EncodeToString(reportData[:]),
		Time:               a.now().UTC().Format(time.RFC3339Nano),
		PlatformKey:        protocol.FormatEd25519Key(a.PublicKey()),
	}
	stBytes, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("software attester: encoding statement: %w", err)
	}
	env := Envelope{
		Format:    Format,
		Statement: stBytes,
		Signature: ed25519.Sign(a.priv, signedMessage(stBytes)),
	}
	data, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("software attester: encoding envelope: %w", err)
	}
	return &attest.Evidence{Class: attest.ClassSoftware, Data: data}, nil
}

func signedMessage(statement []byte) []byte {
	msg := make([]byte, 0, len(SignatureContext)+len(statement))
	msg = append(msg, SignatureContext...)
	return append(msg, statement...)
}
