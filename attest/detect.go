package attest

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
)

// OIDTCGDiceTaggedEvidence is the X.509 extension that carries evidence in
// interoperable RA-TLS certificates.
var OIDTCGDiceTaggedEvidence = asn1.ObjectIdentifier{2, 23, 133, 5, 4, 9}

// Format markers of Cloister's own JSON evidence envelopes. They are kept
// here (and not only in the class packages) so detection does not import
// every class.
const (
	softwareFormatMarker = "cloister-software-evidence/"
	tpmFormatMarker      = "cloister-tpm-evidence/"
)

// maxDetectInput bounds what DecodeInput and Detect look at.
const maxDetectInput = 16 << 20

// DecodeInput turns a file's contents into evidence bytes. Binary evidence
// and the text formats (JSON, JWT, PEM) are returned unchanged; content that
// is entirely base64 (standard or URL alphabet, padded or not, line breaks
// allowed) and is not one of those text formats is decoded. It never fails
// on binary input: an undecodable file is returned as is and left to Detect
// or the verifier to judge.
func DecodeInput(raw []byte) ([]byte, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: input is empty", ErrMalformed)
	}
	if len(raw) > maxDetectInput {
		return nil, fmt.Errorf("%w: input is %d bytes, limit %d", ErrMalformed, len(raw), maxDetectInput)
	}
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return nil, fmt.Errorf("%w: input is only white space", ErrMalformed)
	}
	switch {
	case bytes.HasPrefix(t, []byte("-----BEGIN")), t[0] == '{', isJWT(t):
		return t, nil
	}
	if b, ok := decodeBase64Text(t); ok {
		return b, nil
	}
	return raw, nil
}

func decodeBase64Text(t []byte) ([]byte, bool) {
	compact := make([]byte, 0, len(t))
	for _, c := range t {
		switch {
		case c == '\n' || c == '\r' || c == ' ' || c == '\t':
			continue
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/', c == '-', c == '_', c == '=':
			compact = append(compact, c)
		default:
			return nil, false
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(string(compact)); err == nil && len(b) > 0 {
			return b, true
		}
	}
	return nil, false
}

func isJWT(t []byte) bool {
	parts := bytes.Split(t, []byte("."))
	if len(parts) != 3 || len(parts[0]) == 0 || len(parts[1]) == 0 {
		return false
	}
	for _, p := range parts {
		for _, c := range p {
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	hdr, err := base64.RawURLEncoding.DecodeString(string(parts[0]))
	return err == nil && len(hdr) > 0 && hdr[0] == '{'
}

// Detect names the class of evidence from its bytes (as DecodeInput returns
// them). It looks only at framing (magic numbers, envelope markers), never
// at signatures: the verifier of the class it names still has to accept it.
// It returns an error wrapping ErrUnknownClass when nothing matches.
func Detect(data []byte) (Class, error) {
	t := bytes.TrimSpace(data)
	if len(t) == 0 {
		return "", fmt.Errorf("%w: empty input", ErrUnknownClass)
	}
	switch {
	case bytes.HasPrefix(t, []byte("-----BEGIN CERTIFICATE-----")):
		if blk, _ := pem.Decode(t); blk != nil && hasRATLSExtension(blk.Bytes) {
			return ClassRATLS, nil
		}
		return "", fmt.Errorf("%w: a PEM certificate without the RA-TLS evidence extension %s", ErrUnknownClass, OIDTCGDiceTaggedEvidence)
	case t[0] == '{':
		return detectJSON(t)
	case isJWT(t):
		return ClassEAR, nil
	}
	// From here on the input is binary: look at the raw bytes, not trimmed.
	d := data
	if c, ok := detectCBOR(d); ok {
		return c, nil
	}
	if c, ok := detectQuote(d); ok {
		return c, nil
	}
	if len(d) >= 4 && d[0] == 0x30 && hasRATLSExtension(d) {
		return ClassRATLS, nil
	}
	return "", fmt.Errorf("%w: %d bytes in no format this build recognises (first bytes %x)", ErrUnknownClass, len(d), d[:min(len(d), 8)])
}

func detectJSON(t []byte) (Class, error) {
	var probe struct {
		Format string          `json:"format"`
		AK     json.RawMessage `json:"AK"`
		Quote  json.RawMessage `json:"Quote"`
		Static json.RawMessage `json:"Static"`
	}
	if err := json.Unmarshal(t, &probe); err != nil {
		return "", fmt.Errorf("%w: JSON input does not parse: %v", ErrUnknownClass, err)
	}
	switch {
	case bytes.HasPrefix([]byte(probe.Format), []byte(softwareFormatMarker)):
		return ClassSoftware, nil
	case bytes.HasPrefix([]byte(probe.Format), []byte(tpmFormatMarker)):
		return ClassTPM, nil
	case probe.AK != nil && probe.Quote != nil:
		// The TPM test-data shape of go-attestation (AK, Quote, Log).
		return ClassTPM, nil
	}
	return "", fmt.Errorf("%w: JSON input with format %q is no evidence envelope this build knows", ErrUnknownClass, probe.Format)
}

// detectCBOR recognises CCA tokens (tags 399 and 907) and COSE_Sign1
// (Nitro: an array of four, untagged or with tag 18).
func detectCBOR(d []byte) (Class, bool) {
	switch {
	case bytes.HasPrefix(d, []byte{0xd9, 0x01, 0x8f}), bytes.HasPrefix(d, []byte{0xd9, 0x03, 0x8b}):
		return ClassCCA, true
	case len(d) > 2 && d[0] == 0xd2 && d[1] == 0x84, len(d) > 1 && d[0] == 0x84:
		// COSE_Sign1: protected header is a byte string (major type 2).
		i := 1
		if d[0] == 0xd2 {
			i = 2
		}
		if len(d) > i && d[i]>>5 == 2 {
			return ClassNitro, true
		}
	}
	return "", false
}

// detectQuote recognises Intel DCAP quotes (SGX, TDX) and AMD SEV-SNP
// reports by their headers.
func detectQuote(d []byte) (Class, bool) {
	if len(d) >= 48 {
		version := binary.LittleEndian.Uint16(d[0:])
		keyType := binary.LittleEndian.Uint16(d[2:])
		tee := binary.LittleEndian.Uint32(d[4:])
		if (version == 3 || version == 4 || version == 5) && (keyType == 2 || keyType == 3) {
			switch tee {
			case 0x00000000:
				return ClassSGX, true
			case 0x00000081:
				return ClassTDX, true
			}
		}
	}
	if len(d) >= 1184 {
		if v := binary.LittleEndian.Uint32(d[0:]); v >= 2 && v <= 5 {
			return ClassSEVSNP, true
		}
	}
	return "", false
}

func hasRATLSExtension(der []byte) bool {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return false
	}
	for _, e := range cert.Extensions {
		if e.Id.Equal(OIDTCGDiceTaggedEvidence) {
			return true
		}
	}
	return false
}
