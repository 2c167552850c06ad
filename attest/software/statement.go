package software

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
)

// Format is the value of the envelope's "format" member; a reader uses it to
// recognise software evidence and its version.
const Format = "cloister-software-evidence/v1"

// SignatureContext is prepended to the statement bytes before signing, so a
// platform key's signature over a statement can never be replayed as a
// signature in another protocol that uses the same key (ledger entries,
// session messages), and vice versa.
const SignatureContext = "cloister attest software statement v1\x00"

// maxEvidenceSize bounds what ParseEnvelope accepts; a real envelope is well
// under 1 KiB.
const maxEvidenceSize = 16 << 10

// Statement is what the platform key signs. Its JSON encoding, exactly as it
// appears (base64) in the envelope, is the signed message: verifiers never
// re-encode it, so no canonicalisation is needed.
//
//	{"version":1,"class":"software","runtime_measurement":"<64 hex>",
//	 "report_data":"<128 hex>","time":"<RFC 3339, UTC, nanoseconds>",
//	 "platform_key":"ed25519:<base64>"}
type Statement struct {
	Version            int    `json:"version"`
	Class              string `json:"class"`
	RuntimeMeasurement string `json:"runtime_measurement"`
	ReportData         string `json:"report_data"`
	Time               string `json:"time"`
	PlatformKey        string `json:"platform_key"`
}

// Envelope is the evidence as it travels: the signed statement bytes and the
// Ed25519 signature over SignatureContext || statement.
//
//	{"format":"cloister-software-evidence/v1","statement":"<base64 std>","signature":"<base64 std>"}
type Envelope struct {
	Format    string `json:"format"`
	Statement []byte `json:"statement"`
	Signature []byte `json:"signature"`
}

// ParsedStatement is a statement whose fields have been decoded and checked
// for shape (not for signature).
type ParsedStatement struct {
	RuntimeMeasurement [32]byte
	ReportData         [attest.ReportDataSize]byte
	Time               time.Time
	PlatformKey        ed25519.PublicKey
}

// ParseEnvelope decodes software evidence. It checks shape only: the
// signature is checked by Verify.
func ParseEnvelope(data []byte) (*Envelope, *ParsedStatement, error) {
	if len(data) > maxEvidenceSize {
		return nil, nil, fmt.Errorf("%w: software evidence is %d bytes, limit %d", attest.ErrMalformed, len(data), maxEvidenceSize)
	}
	var env Envelope
	if err := strictUnmarshal(data, &env); err != nil {
		return nil, nil, fmt.Errorf("%w: software evidence envelope: %v", attest.ErrMalformed, err)
	}
	if env.Format != Format {
		return nil, nil, fmt.Errorf("%w: software evidence format is %q, want %q", attest.ErrMalformed, env.Format, Format)
	}
	if len(env.Signature) != ed25519.SignatureSize {
		return nil, nil, fmt.Errorf("%w: software evidence signature is %d bytes, want %d", attest.ErrMalformed, len(env.Signature), ed25519.SignatureSize)
	}
	var st Statement
	if err := strictUnmarshal(env.Statement, &st); err != nil {
		return nil, nil, fmt.Errorf("%w: software statement: %v", attest.ErrMalformed, err)
	}
	ps, err := st.parse()
	if err != nil {
		return nil, nil, err
	}
	return &env, ps, nil
}

func (st *Statement) parse() (*ParsedStatement, error) {
	if st.Version != 1 {
		return nil, fmt.Errorf("%w: software statement version %d, want 1", attest.ErrMalformed, st.Version)
	}
	if st.Class != string(attest.ClassSoftware) {
		return nil, fmt.Errorf("%w: software statement class %q, want %q", attest.ErrMalformed, st.Class, attest.ClassSoftware)
	}
	var ps ParsedStatement
	if err := decodeHexExact(st.RuntimeMeasurement, ps.RuntimeMeasurement[:]); err != nil {
		return nil, fmt.Errorf("%w: software statement runtime_measurement: %v", attest.ErrMalformed, err)
	}
	if err := decodeHexExact(st.ReportData, ps.ReportData[:]); err != nil {
		return nil, fmt.Errorf("%w: software statement report_data: %v", attest.ErrMalformed, err)
	}
	t, err := time.Parse(time.RFC3339Nano, st.Time)
	if err != nil {
		return nil, fmt.Errorf("%w: software statement time: %v", attest.ErrMalformed, err)
	}
	ps.Time = t
	pk, err := protocol.ParseEd25519Key(st.PlatformKey)
	if err != nil {
		return nil, fmt.Errorf("%w: software statement platform_key: %v", attest.ErrMalformed, err)
	}
	ps.PlatformKey = pk
	return &ps, nil
}

func decodeHexExact(s string, dst []byte) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("%d hex digits, want %d", len(s), 2*len(dst))
	}
	if s != strings.ToLower(s) {
		return fmt.Errorf("hex must be lower case")
	}
	_, err := hex.Decode(dst, []byte(s))
	return err
}

// strictUnmarshal refuses unknown members and trailing data, so one signed
// statement has exactly one meaning.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after JSON value")
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err == nil {
		return fmt.Errorf("trailing data after JSON value")
	}
	return nil
}

// PlatformKeyMatches reports whether the text form s (as written in a
// policy) names pub. Malformed s never matches.
func PlatformKeyMatches(s string, pub ed25519.PublicKey) bool {
	k, err := protocol.ParseEd25519Key(s)
	return err == nil && k.Equal(pub)
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
