package ledger

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
)

// Kind names the type of an entry; the state machine knows the body schema
// and the authority rule of each kind (see authority.go).
type Kind string

// Entry kinds. The last three are reserved: the ledger accepts them (from a
// registered node, with an object body) so that the marketplace, federation
// and PIEE work can start writing them without a ledger upgrade.
const (
	KindNote            Kind = "note"
	KindNodeRegistered  Kind = "node.registered"
	KindPolicyPublished Kind = "policy.published"
	KindSessionEvent    Kind = "session.event"
	KindACLGranted      Kind = "acl.granted"
	KindACLRevoked      Kind = "acl.revoked"
	KindResultCommitted Kind = "result.committed"
	KindModelPublished  Kind = "model.published"
	KindChallenge       Kind = "challenge"
	KindVerdict         Kind = "verdict"
	KindMemberAdmitted  Kind = "member.admitted"
	KindMemberRemoved   Kind = "member.removed"
	entrySigningDomain       = "cloister/ledger/entry/v1\n"
	maxEntryBytes            = 64 << 10
	maxNonce                 = 1<<53 - 1 // exactly representable in JSON numbers everywhere
)

// Kinds lists every kind the state machine accepts.
var Kinds = []Kind{KindNote, KindNodeRegistered, KindPolicyPublished, KindSessionEvent,
	KindACLGranted, KindACLRevoked, KindResultCommitted, KindModelPublished, KindChallenge, KindVerdict,
	KindMemberAdmitted, KindMemberRemoved}

// Entry is the signed content of one log entry. Its canonical JSON form
// (sorted keys, no whitespace) is what the submitter signs.
type Entry struct {
	Kind Kind `json:"kind"`
	// Body is the kind-specific payload, kept in canonical JSON.
	Body json.RawMessage `json:"body"`
	// Submitter is the signer's public key, "ed25519:<base64>".
	Submitter string `json:"submitter"`
	// Nonce makes (Submitter, Nonce) unique: the ledger refuses a second
	// entry with the same pair, so a captured entry cannot be replayed.
	Nonce uint64 `json:"nonce"`
	// Time is the submitter's clock, RFC 3339 UTC; the state machine
	// refuses entries far from the block time.
	Time string `json:"time"`
}

// SignedEntry is an Entry with the submitter's Ed25519 signature over
// entrySigningDomain || canonical(Entry). Its canonical JSON is the
// transaction and the Merkle leaf.
type SignedEntry struct {
	Entry     Entry  `json:"entry"`
	Signature []byte `json:"sig"`
}

// canonicalEntry renders e in canonical JSON. Field names are written in
// sorted order by hand; the body was canonicalised when the entry was built
// or decoded.
func (e *Entry) canonical() []byte {
	var b bytes.Buffer
	b.WriteString(`{"body":`)
	b.Write(e.Body)
	b.WriteString(`,"kind":`)
	writeCanonString(&b, string(e.Kind))
	fmt.Fprintf(&b, `,"nonce":%d,"submitter":`, e.Nonce)
	writeCanonString(&b, e.Submitter)
	b.WriteString(`,"time":`)
	writeCanonString(&b, e.Time)
	b.WriteByte('}')
	return b.Bytes()
}

// SigningMessage is the exact byte string the submitter signs.
func (e *Entry) SigningMessage() []byte {
	return append([]byte(entrySigningDomain), e.canonical()...)
}

// Encode returns the canonical transaction bytes of the signed entry.
func (s *SignedEntry) Encode() []byte {
	var b bytes.Buffer
	b.WriteString(`{"entry":`)
	b.Write(s.Entry.canonical())
	b.WriteString(`,"sig":"`)
	b.WriteString(base64.StdEncoding.EncodeToString(s.Signature))
	b.WriteString(`"}`)
	return b.Bytes()
}

// LeafHash is the RFC 6962 leaf hash of the entry: SHA-256(0x00 || tx).
func LeafHash(tx []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write(tx)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// NewEntry builds and signs an entry of the given kind with a fresh random
// nonce and the current time. body must be a JSON object.
func NewEntry(key ed25519.PrivateKey, kind Kind, body any) (*SignedEntry, error) {
	var nb [8]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return nil, err
	}
	return NewEntryWithNonce(key, kind, body, binary.BigEndian.Uint64(nb[:])&maxNonce, time.Now())
}

// NewEntryWithNonce is NewEntry with the caller choosing nonce and time
// (a node that numbers its own entries, tests, replays that must fail).
func NewEntryWithNonce(key ed25519.PrivateKey, kind Kind, body any, nonce uint64, at time.Time) (*SignedEntry, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("ledger entry: signing key is not an Ed25519 private key")
	}
	var raw []byte
	switch b := body.(type) {
	case json.RawMessage:
		raw = b
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("ledger entry body: %w", err)
		}
	}
	canon, err := Canonicalize(raw)
	if err != nil {
		return nil, fmt.Errorf("ledger entry body: %w", err)
	}
	if nonce > maxNonce {
		return nil, fmt.Errorf("ledger entry nonce %d exceeds 2^53-1", nonce)
	}
	e := Entry{
		Kind:      kind,
		Body:      canon,
		Submitter: protocol.FormatEd25519Key(key.Public().(ed25519.PublicKey)),
		Nonce:     nonce,
		Time:      formatTime(at),
	}
	se := &SignedEntry{Entry: e, Signature: ed25519.Sign(key, e.SigningMessage())}
	if n := len(se.Encode()); n > maxEntryBytes {
		return nil, fmt.Errorf("ledger entry is %d bytes, limit %d", n, maxEntryBytes)
	}
	return se, nil
}

func formatTime(t time.Time) string { return t.UTC().Truncate(time.Millisecond).Format(timeLayout) }

const timeLayout = "2006-01-02T15:04:05.000Z"

// DecodeEntry parses transaction bytes into a signed entry. It checks the
// shape only (canonical encoding, field formats, sizes), not the signature
// nor the state; VerifySignature and the state machine do those.
// Non-canonical encodings are refused so that one entry has exactly one
// transaction and one leaf hash.
func DecodeEntry(tx []byte) (*SignedEntry, error) {
	if len(tx) > maxEntryBytes {
		return nil, fmt.Errorf("entry is %d bytes, limit %d", len(tx), maxEntryBytes)
	}
	var wire struct {
		Entry *struct {
			Kind      *string         `json:"kind"`
			Body      json.RawMessage `json:"body"`
			Submitter *string         `json:"submitter"`
			Nonce     *uint64         `json:"nonce"`
			Time      *string         `json:"time"`
		} `json:"entry"`
		Sig *string `json:"sig"`
	}
	dec := json.NewDecoder(bytes.NewReader(tx))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&wire); err != nil {
		return nil, fmt.Errorf("entry is not valid JSON: %w", err)
	}
	w := wire.Entry
	switch {
	case w == nil:
		return nil, errors.New(`entry: missing "entry"`)
	case wire.Sig == nil:
		return nil, errors.New(`entry: missing "sig"`)
	case w.Kind == nil || *w.Kind == "":
		return nil, errors.New(`entry: missing "kind"`)
	case len(w.Body) == 0:
		return nil, errors.New(`entry: missing "body"`)
	case w.Submitter == nil:
		return nil, errors.New(`entry: missing "submitter"`)
	case w.Nonce == nil:
		return nil, errors.New(`entry: missing "nonce"`)
	case w.Time == nil:
		return nil, errors.New(`entry: missing "time"`)
	}
	if *w.Nonce > maxNonce {
		return nil, fmt.Errorf("entry: nonce %d exceeds 2^53-1", *w.Nonce)
	}
	if _, err := protocol.ParseEd25519Key(*w.Submitter); err != nil {
		return nil, fmt.Errorf("entry submitter: %w", err)
	}
	ts, err := time.Parse(timeLayout, *w.Time)
	if err != nil || formatTime(ts) != *w.Time {
		return nil, fmt.Errorf("entry time %.40q: want UTC with milliseconds, like 2026-01-02T15:04:05.000Z", *w.Time)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(*wire.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("entry sig: not a base64 %d-byte Ed25519 signature", ed25519.SignatureSize)
	}
	body, err := Canonicalize(w.Body)
	if err != nil {
		return nil, fmt.Errorf("entry body: %w", err)
	}
	if len(body) == 0 || body[0] != '{' {
		return nil, errors.New("entry body: must be a JSON object")
	}
	se := &SignedEntry{
		Entry:     Entry{Kind: Kind(*w.Kind), Body: body, Submitter: *w.Submitter, Nonce: *w.Nonce, Time: *w.Time},
		Signature: sig,
	}
	if !bytes.Equal(se.Encode(), tx) {
		return nil, errors.New("entry: not in canonical JSON form (sorted keys, no whitespace, minimal escapes)")
	}
	return se, nil
}

// VerifySignature checks the submitter's signature over the entry.
func (s *SignedEntry) VerifySignature() error {
	pub, err := protocol.ParseEd25519Key(s.Entry.Submitter)
	if err != nil {
		return err
	}
	if !ed25519.Verify(pub, s.Entry.SigningMessage(), s.Signature) {
		return ErrBadSignature
	}
	return nil
}

// ParsedTime returns the entry's timestamp.
func (e *Entry) ParsedTime() time.Time {
	t, _ := time.Parse(timeLayout, e.Time)
	return t
}
