package ratls

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"

	"github.com/fxamacker/cbor/v2"

	"github.com/cloisterhq/cloister/attest"
)

// CBOR tags of evidence formats.
const (
	TagIntelQuote      = 60000 // Intel TEE quote (SGX/TDX ECDSA), registered with IANA
	TagIntelReport     = 60001 // TDX report or SGX report type 2: local only, not verifiable remotely
	TagSGXLegacyReport = 60002
	// CloisterTag carries evidence of other classes (unregistered, private
	// to Cloister): [class, evidence, claims-buffer, [collateral...]].
	CloisterTag = 1129270867 // "CLOS"
)

// Hash algorithm IDs of the IANA Named Information registry.
const (
	HashSHA256 = 1
	HashSHA384 = 7
	HashSHA512 = 8
)

// OIDEvidence and OIDEndorsements are the TCG DICE extensions.
var (
	OIDEvidence     = asn1.ObjectIdentifier{2, 23, 133, 5, 4, 9}
	OIDEndorsements = asn1.ObjectIdentifier{2, 23, 133, 5, 4, 2}
)

// ErrFormat marks an extension or claims buffer that does not parse.
var ErrFormat = errors.New("malformed RA-TLS evidence")

// maxExtension bounds the evidence extension (real ones are ~5 KB).
const maxExtension = 1 << 20

var decMode = func() cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  8,
		MaxArrayElements: 64,
		MaxMapPairs:      64,
		IndefLength:      cbor.IndefLengthForbidden,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}()

var encMode = func() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// Extension is a parsed evidence extension.
type Extension struct {
	Tag uint64
	// Class is the evidence class: sgx or tdx for tag 60000 (from the
	// quote header), the named class for CloisterTag.
	Class        attest.Class
	Evidence     []byte
	Collateral   [][]byte
	ClaimsBuffer []byte
	Claims       *ClaimsSet
}

// ClaimsSet is the decoded claims buffer.
type ClaimsSet struct {
	PubkeyHashAlg uint64
	PubkeyHash    []byte
	Nonce         []byte // nil when absent
}

type cloisterBody struct {
	_          struct{} `cbor:",toarray"`
	Class      string
	Evidence   []byte
	Claims     []byte
	Collateral [][]byte
}

type intelBody struct {
	_      struct{} `cbor:",toarray"`
	Quote  []byte
	Claims []byte
}

// ParseExtension decodes the value of extension 2.23.133.5.4.9. It checks
// structure only.
func ParseExtension(value []byte) (*Extension, error) {
	if len(value) > maxExtension {
		return nil, fmt.Errorf("%w: evidence extension is %d bytes, limit %d", ErrFormat, len(value), maxExtension)
	}
	var tag cbor.RawTag
	rest, err := decMode.UnmarshalFirst(value, &tag)
	if err != nil {
		return nil, fmt.Errorf("%w: evidence extension is not tagged CBOR: %v", ErrFormat, err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the tagged CBOR evidence", ErrFormat, len(rest))
	}
	ext := &Extension{Tag: tag.Number}
	switch tag.Number {
	case TagIntelQuote:
		var b intelBody
		if err := decMode.Unmarshal(tag.Content, &b); err != nil {
			return nil, fmt.Errorf("%w: tag 60000 content is not [quote, claims-buffer]: %v", ErrFormat, err)
		}
		ext.Evidence, ext.ClaimsBuffer = b.Quote, b.Claims
		if len(b.Quote) < 8 {
			return nil, fmt.Errorf("%w: quote of %d bytes", ErrFormat, len(b.Quote))
		}
		// The quote header says which TEE made it (v3: always SGX).
		if b.Quote[4] == 0x81 {
			ext.Class = attest.ClassTDX
		} else {
			ext.Class = attest.ClassSGX
		}
	case CloisterTag:
		var b cloisterBody
		if err := decMode.Unmarshal(tag.Content, &b); err != nil {
			return nil, fmt.Errorf("%w: Cloister evidence is not [class, evidence, claims-buffer, collateral]: %v", ErrFormat, err)
		}
		if b.Class == "" || attest.Class(b.Class) == attest.ClassRATLS {
			return nil, fmt.Errorf("%w: evidence class %q", ErrFormat, b.Class)
		}
		ext.Class, ext.Evidence, ext.ClaimsBuffer, ext.Collateral = attest.Class(b.Class), b.Evidence, b.Claims, b.Collateral
	case TagIntelReport, TagSGXLegacyReport:
		return nil, fmt.Errorf("%w: tag %d carries a local report, which only the same machine can verify", ErrFormat, tag.Number)
	default:
		return nil, fmt.Errorf("%w: unknown evidence CBOR tag %d", ErrFormat, tag.Number)
	}
	cs, err := ParseClaims(ext.ClaimsBuffer)
	if err != nil {
		return nil, err
	}
	ext.Claims = cs
	return ext, nil
}

// ParseClaims decodes a claims buffer: a CBOR map of text keys to byte
// strings with a required "pubkey-hash" and optional "nonce"; other claims
// are ignored, as the specification says.
func ParseClaims(buf []byte) (*ClaimsSet, error) {
	var m map[string]cbor.RawMessage
	if err := decMode.Unmarshal(buf, &m); err != nil {
		return nil, fmt.Errorf("%w: claims buffer is not a CBOR map: %v", ErrFormat, err)
	}
	raw, ok := m["pubkey-hash"]
	if !ok {
		return nil, fmt.Errorf("%w: claims buffer has no pubkey-hash", ErrFormat)
	}
	var entryBytes []byte
	if err := decMode.Unmarshal(raw, &entryBytes); err != nil {
		return nil, fmt.Errorf("%w: pubkey-hash is not a byte string: %v", ErrFormat, err)
	}
	var entry struct {
		_     struct{} `cbor:",toarray"`
		Alg   uint64
		Value []byte
	}
	if err := decMode.Unmarshal(entryBytes, &entry); err != nil {
		return nil, fmt.Errorf("%w: pubkey-hash is not a hash-entry [alg, value]: %v", ErrFormat, err)
	}
	h := hashFor(entry.Alg)
	if h == nil {
		return nil, fmt.Errorf("%w: pubkey-hash algorithm %d (supported: 1 SHA-256, 7 SHA-384, 8 SHA-512)", ErrFormat, entry.Alg)
	}
	if len(entry.Value) != h().Size() {
		return nil, fmt.Errorf("%w: pubkey-hash of %d bytes for algorithm %d", ErrFormat, len(entry.Value), entry.Alg)
	}
	cs := &ClaimsSet{PubkeyHashAlg: entry.Alg, PubkeyHash: entry.Value}
	if raw, ok := m["nonce"]; ok {
		if err := decMode.Unmarshal(raw, &cs.Nonce); err != nil {
			return nil, fmt.Errorf("%w: nonce is not a byte string: %v", ErrFormat, err)
		}
		if cs.Nonce == nil {
			cs.Nonce = []byte{}
		}
	}
	return cs, nil
}

func hashFor(alg uint64) func() hash.Hash {
	switch alg {
	case HashSHA256:
		return sha256.New
	case HashSHA384:
		return sha512.New384
	case HashSHA512:
		return sha512.New
	}
	return nil
}

// ClaimsBuffer builds the claims buffer for a certificate key: the
// SHA-256 pubkey-hash of its SubjectPublicKeyInfo and, if non-nil, a nonce.
func ClaimsBuffer(pub crypto.PublicKey, nonce []byte) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("ratls: public key: %w", err)
	}
	sum := sha256.Sum256(spki)
	entry, err := encMode.Marshal([]any{uint64(HashSHA256), sum[:]})
	if err != nil {
		return nil, err
	}
	m := map[string][]byte{"pubkey-hash": entry}
	if nonce != nil {
		m["nonce"] = nonce
	}
	return encMode.Marshal(m)
}

// ReportData is the report data an attester must bind for a claims
// buffer: SHA-256(claims-buffer) followed by 32 zero bytes.
func ReportData(claimsBuffer []byte) [attest.ReportDataSize]byte {
	var rd [attest.ReportDataSize]byte
	sum := sha256.Sum256(claimsBuffer)
	copy(rd[:], sum[:])
	return rd
}

// Sniff reports whether data is a certificate (PEM or DER) with the RA-TLS
// evidence extension.
func Sniff(data []byte) bool {
	der := data
	if t := bytes.TrimSpace(data); bytes.HasPrefix(t, []byte("-----BEGIN CERTIFICATE")) {
		blk, _ := pem.Decode(t)
		if blk == nil {
			return false
		}
		der = blk.Bytes
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return false
	}
	return findExtension(cert) != nil
}

func findExtension(cert *x509.Certificate) []byte {
	for _, e := range cert.Extensions {
		if e.Id.Equal(OIDEvidence) {
			return e.Value
		}
	}
	return nil
}

func cborTag(n uint64, content []byte) cbor.RawTag {
	return cbor.RawTag{Number: n, Content: cbor.RawMessage(content)}
}
