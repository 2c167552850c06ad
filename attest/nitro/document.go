package nitro

import (
	"crypto/x509"
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/cloisterhq/cloister/attest"
)

// maxDocumentSize bounds what Parse accepts; real documents are ~5 KiB,
// the NSM's response buffer is 12 KiB.
const maxDocumentSize = 64 << 10

// Document is the CBOR payload of a Nitro attestation document.
type Document struct {
	ModuleID    string          `cbor:"module_id"`
	Timestamp   uint64          `cbor:"timestamp"` // milliseconds since the Unix epoch
	Digest      string          `cbor:"digest"`
	PCRs        map[uint][]byte `cbor:"pcrs"`
	Certificate []byte          `cbor:"certificate"`
	CABundle    [][]byte        `cbor:"cabundle"`
	PublicKey   []byte          `cbor:"public_key,omitempty"`
	UserData    []byte          `cbor:"user_data,omitempty"`
	Nonce       []byte          `cbor:"nonce,omitempty"`
}

// Parsed is a decoded, shape-checked attestation document whose signature
// has not been checked yet.
type Parsed struct {
	Message  *cose.Sign1Message
	Doc      Document
	Leaf     *x509.Certificate
	CABundle []*x509.Certificate
}

var docDecMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  8,
		MaxArrayElements: 64,
		MaxMapPairs:      64,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// normaliseSign1 strips an optional tag 18 and replaces a null unprotected
// header by an empty map: some producers write null, which go-cose refuses.
// The unprotected header is not covered by the signature, so this changes
// nothing that is verified.
func normaliseSign1(data []byte) ([]byte, error) {
	if data[0] == 0xd2 {
		var tag cbor.RawTag
		if err := docDecMode.Unmarshal(data, &tag); err != nil {
			return nil, err
		}
		if tag.Number != 18 {
			return nil, fmt.Errorf("CBOR tag %d, want 18", tag.Number)
		}
		data = tag.Content
	}
	var parts []cbor.RawMessage
	if err := docDecMode.Unmarshal(data, &parts); err != nil {
		return nil, err
	}
	if len(parts) != 4 {
		return nil, fmt.Errorf("array of %d elements, want 4", len(parts))
	}
	if len(parts[1]) == 1 && parts[1][0] == 0xf6 {
		parts[1] = cbor.RawMessage{0xa0}
		return cbor.Marshal(parts)
	}
	return data, nil
}

// Parse decodes a COSE_Sign1 attestation document, untagged or with CBOR
// tag 18, and checks the shape rules of the AWS Nitro Enclaves user guide
// ("Attestation document validation", syntactical validation).
func Parse(data []byte) (*Parsed, error) {
	if len(data) == 0 || len(data) > maxDocumentSize {
		return nil, fmt.Errorf("%w: nitro document is %d bytes (1..%d)", attest.ErrMalformed, len(data), maxDocumentSize)
	}
	untagged, err := normaliseSign1(data)
	if err != nil {
		return nil, fmt.Errorf("%w: nitro COSE_Sign1: %v", attest.ErrMalformed, err)
	}
	msg := &cose.Sign1Message{}
	if err := (*cose.UntaggedSign1Message)(msg).UnmarshalCBOR(untagged); err != nil {
		return nil, fmt.Errorf("%w: nitro COSE_Sign1: %v", attest.ErrMalformed, err)
	}
	alg, err := msg.Headers.Protected.Algorithm()
	if err != nil {
		return nil, fmt.Errorf("%w: nitro COSE_Sign1 protected header: algorithm: %v", attest.ErrMalformed, err)
	}
	if alg != cose.AlgorithmES384 {
		return nil, fmt.Errorf("%w: nitro COSE_Sign1 algorithm is %v, want ES384", attest.ErrMalformed, alg)
	}
	if len(msg.Signature) != 96 {
		return nil, fmt.Errorf("%w: nitro signature is %d bytes, want 96", attest.ErrMalformed, len(msg.Signature))
	}
	p := &Parsed{Message: msg}
	if err := docDecMode.Unmarshal(msg.Payload, &p.Doc); err != nil {
		return nil, fmt.Errorf("%w: nitro document payload: %v", attest.ErrMalformed, err)
	}
	d := &p.Doc
	switch {
	case d.ModuleID == "":
		return nil, fmt.Errorf("%w: nitro document has no module_id", attest.ErrMalformed)
	case d.Digest != "SHA384":
		return nil, fmt.Errorf("%w: nitro document digest is %q, want SHA384", attest.ErrMalformed, d.Digest)
	case d.Timestamp == 0:
		return nil, fmt.Errorf("%w: nitro document has no timestamp", attest.ErrMalformed)
	case len(d.PCRs) == 0 || len(d.PCRs) > 32:
		return nil, fmt.Errorf("%w: nitro document has %d PCRs (1..32)", attest.ErrMalformed, len(d.PCRs))
	case len(d.PublicKey) > 4096, len(d.UserData) > 4096, len(d.Nonce) > 4096:
		return nil, fmt.Errorf("%w: nitro document public_key, user_data or nonce exceeds 4096 bytes", attest.ErrMalformed)
	}
	for i, v := range d.PCRs {
		if i >= 32 {
			return nil, fmt.Errorf("%w: nitro document PCR index %d out of range", attest.ErrMalformed, i)
		}
		if n := len(v); n != 32 && n != 48 && n != 64 {
			return nil, fmt.Errorf("%w: nitro document PCR%d is %d bytes", attest.ErrMalformed, i, n)
		}
	}
	if _, ok := d.PCRs[0]; !ok {
		return nil, fmt.Errorf("%w: nitro document has no PCR0", attest.ErrMalformed)
	}
	if p.Leaf, err = x509.ParseCertificate(d.Certificate); err != nil {
		return nil, fmt.Errorf("%w: nitro document certificate: %v", attest.ErrMalformed, err)
	}
	for i, der := range d.CABundle {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: nitro document cabundle[%d]: %v", attest.ErrMalformed, i, err)
		}
		p.CABundle = append(p.CABundle, c)
	}
	return p, nil
}
