package nitro

import (
	"context"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/cloisterhq/cloister/attest"
)

// Device is the Nitro Secure Module as the attester uses it: one CBOR
// request in, one CBOR response out. OpenNSM returns the real device; tests
// use an in-process implementation that signs with a test CA.
type Device interface {
	Send(request []byte) ([]byte, error)
	Close() error
}

// nsmRequest is the NSM API's Request::Attestation, encoded the way the
// NSM driver's CBOR (serde) expects: {"Attestation": {...}} with null for
// absent fields.
type nsmAttestationRequest struct {
	UserData  []byte `cbor:"user_data"`
	Nonce     []byte `cbor:"nonce"`
	PublicKey []byte `cbor:"public_key"`
}

type nsmResponse struct {
	Attestation *struct {
		Document []byte `cbor:"document"`
	} `cbor:"Attestation,omitempty"`
	Error string `cbor:"Error,omitempty"`
}

// Attester asks the NSM for attestation documents whose user_data is the
// report data.
type Attester struct {
	dev       Device
	publicKey []byte
}

// NewAttester returns an attester on dev. publicKey, if not nil, is placed
// in the document's public_key field (at most 1024 bytes), e.g. a session
// key a relying party will encrypt to.
func NewAttester(dev Device, publicKey []byte) (*Attester, error) {
	if dev == nil {
		return nil, fmt.Errorf("nitro attester: no NSM device")
	}
	if len(publicKey) > 1024 {
		return nil, fmt.Errorf("nitro attester: public key is %d bytes, the NSM accepts at most 1024", len(publicKey))
	}
	return &Attester{dev: dev, publicKey: publicKey}, nil
}

// Class returns attest.ClassNitro.
func (a *Attester) Class() attest.Class { return attest.ClassNitro }

// Attest requests a document with user_data = reportData.
func (a *Attester) Attest(ctx context.Context, reportData [attest.ReportDataSize]byte) (*attest.Evidence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	req, err := cbor.Marshal(map[string]nsmAttestationRequest{"Attestation": {
		UserData:  reportData[:],
		PublicKey: a.publicKey,
	}})
	if err != nil {
		return nil, fmt.Errorf("nitro attester: encoding request: %w", err)
	}
	raw, err := a.dev.Send(req)
	if err != nil {
		return nil, fmt.Errorf("nitro attester: NSM request: %w", err)
	}
	resp, err := decodeResponse(raw)
	if err != nil {
		return nil, err
	}
	// Check what the NSM returned before handing it out: a document that
	// does not parse or binds other data is a device fault.
	p, err := Parse(resp)
	if err != nil {
		return nil, fmt.Errorf("nitro attester: NSM returned a bad document: %w", err)
	}
	if string(p.Doc.UserData) != string(reportData[:]) {
		return nil, fmt.Errorf("nitro attester: NSM document does not carry the requested user data")
	}
	return &attest.Evidence{Class: attest.ClassNitro, Data: resp}, nil
}

func decodeResponse(raw []byte) ([]byte, error) {
	// Unit-variant errors arrive as a bare string ("InvalidArgument" ...).
	var s string
	if err := docDecMode.Unmarshal(raw, &s); err == nil {
		return nil, fmt.Errorf("nitro attester: NSM answered %q", s)
	}
	var r nsmResponse
	if err := docDecMode.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("nitro attester: NSM response: %w", err)
	}
	if r.Error != "" {
		return nil, fmt.Errorf("nitro attester: NSM error %s", r.Error)
	}
	if r.Attestation == nil || len(r.Attestation.Document) == 0 {
		return nil, fmt.Errorf("nitro attester: NSM response holds no attestation document")
	}
	return r.Attestation.Document, nil
}
