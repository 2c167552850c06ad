package verify

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
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/jcs"
)

// Kind names the type of an entry. The verifier treats it as an opaque
// non-empty string; the ledger's rules give each kind its meaning.
type Kind string

const (
	// MaxEntryBytes bounds an entry's transaction.
	MaxEntryBytes = 64 << 10
	// MaxNonce is the largest nonce: 2^53-1, exactly representable as a
	// JSON number everywhere (JavaScript included).
	MaxNonce = 1<<53 - 1
	// TimeLayout is the one form of an entry's time: UTC, milliseconds.
	TimeLayout = "2006-01-02T15:04:05.000Z"

	entrySigningDomain = "cloister/ledger/entry/v1\n"
)

// Entry is the signed content of one log entry.
type Entry struct {
	Kind Kind `json:"kind"`
	// Body is the kind-specific payload: a JSON object, in canonical form.
	Body json.RawMessage `json:"body"`
	// Submitter is the signer's public key, "ed25519:<base64>".
	Submitter string `json:"submitter"`
	// Nonce makes (Submitter, Nonce) unique; the ledger refuses a second
	// entry with the same pair, so a captured entry cannot be replayed.
	Nonce uint64 `json:"nonce"`
	// Time is the submitter's clock, in TimeLayout.
	Time string `json:"time"`
}

// SignedEntry is an Entry with the submitter's Ed25519 signature over
// SigningMessage. Encode is its transaction: the bytes the log holds.
type SignedEntry struct {
	Entry     Entry  `json:"entry"`
	Signature []byte `json:"sig"`
	// Batch is set for an entry signed together with others (rule
	// version 18): Signature is then over its batch's root (batch.go).
	Batch *Batch `json:"batch,omitempty"`
}

// canonical renders e in canonical JSON: members in sorted order, written
// by hand; the body is canonical already (NewEntry and DecodeEntry make it
// so).
func (e *Entry) canonical() []byte {
	b := make([]byte, 0, len(e.Body)+len(e.Submitter)+len(e.Kind)+96)
	b = append(b, `{"body":`...)
	b = append(b, e.Body...)
	b = append(b, `,"kind":`...)
	b = jcs.AppendString(b, string(e.Kind))
	b = append(b, `,"nonce":`...)
	b = strconv.AppendUint(b, e.Nonce, 10)
	b = append(b, `,"submitter":`...)
	b = jcs.AppendString(b, e.Submitter)
	b = append(b, `,"time":`...)
	b = jcs.AppendString(b, e.Time)
	return append(b, '}')
}

// SigningMessage is the exact byte string the submitter signs: a domain
// label, then the canonical entry.
func (e *Entry) SigningMessage() []byte {
	return append([]byte(entrySigningDomain), e.canonical()...)
}

// ParsedTime returns the entry's time (zero if it is not in TimeLayout,
// which DecodeEntry never lets through).
func (e *Entry) ParsedTime() time.Time {
	t, _ := time.Parse(TimeLayout, e.Time)
	return t
}

// Encode returns the entry's transaction: its canonical JSON.
func (s *SignedEntry) Encode() []byte {
	c := s.Entry.canonical()
	b := make([]byte, 0, len(c)+base64.StdEncoding.EncodedLen(len(s.Signature))+20)
	b = append(b, '{')
	if s.Batch != nil {
		b = append(b, `"batch":{"count":`...)
		b = strconv.AppendInt(b, int64(s.Batch.Count), 10)
		b = append(b, `,"index":`...)
		b = strconv.AppendInt(b, int64(s.Batch.Index), 10)
		b = append(b, `,"path":[`...)
		for i, h := range s.Batch.Path {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, h[:])
			b = append(b, '"')
		}
		b = append(b, `]},`...)
	}
	b = append(b, `"entry":`...)
	b = append(b, c...)
	b = append(b, `,"sig":"`...)
	b = base64.StdEncoding.AppendEncode(b, s.Signature)
	return append(b, `"}`...)
}

// LeafHash is the RFC 6962 leaf hash of a transaction: SHA-256(0x00 ‖ tx).
func LeafHash(tx []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write(tx)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// VerifySignature checks the submitter's signature over the entry by the
// signature rule (Signature) — for a batch-signed entry, over its batch's
// root (batch.go). It returns ErrBadSignature, or an error about the
// submitter key's form or the batch's path.
func (s *SignedEntry) VerifySignature() error {
	if s.Batch != nil {
		return s.verifyBatch()
	}
	pub, err := protocol.ParseEd25519Key(s.Entry.Submitter)
	if err != nil {
		return err
	}
	if !Signature(pub, s.Entry.SigningMessage(), s.Signature) {
		return ErrBadSignature
	}
	return nil
}

// NewEntry builds and signs an entry of the given kind with a random nonce
// and the current time. body is a JSON object: a Go value to marshal, or
// JSON text ([]byte, json.RawMessage) in any spelling, which is put in
// canonical form.
func NewEntry(key ed25519.PrivateKey, kind Kind, body any) (*SignedEntry, error) {
	var nb [8]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return nil, err
	}
	return NewEntryWithNonce(key, kind, body, binary.BigEndian.Uint64(nb[:])&MaxNonce, time.Now())
}

// NewEntryWithNonce is NewEntry with the caller choosing nonce and time (a
// node that numbers its own entries, tests, replays that must fail). The
// entry it returns is one DecodeEntry accepts, or it returns an error.
func NewEntryWithNonce(key ed25519.PrivateKey, kind Kind, body any, nonce uint64, at time.Time) (*SignedEntry, error) {
	e, err := buildEntry(key, kind, body, nonce, at)
	if err != nil {
		return nil, err
	}
	se := &SignedEntry{Entry: e, Signature: ed25519.Sign(key, e.SigningMessage())}
	tx := se.Encode()
	if len(tx) > MaxEntryBytes {
		return nil, fmt.Errorf("ledger entry is %d bytes, limit %d", len(tx), MaxEntryBytes)
	}
	// The body may be valid and yet make the whole entry too deep for the
	// canonical form; refuse here rather than at the ledger.
	if _, err := DecodeEntry(tx); err != nil {
		return nil, err
	}
	return se, nil
}

// buildEntry is the entry NewEntryWithNonce and SignBatch sign: its
// fields checked, its body in canonical form.
func buildEntry(key ed25519.PrivateKey, kind Kind, body any, nonce uint64, at time.Time) (Entry, error) {
	if len(key) != ed25519.PrivateKeySize {
		return Entry{}, errors.New("ledger entry: signing key is not an Ed25519 private key")
	}
	if kind == "" {
		return Entry{}, errors.New("ledger entry: empty kind")
	}
	if nonce > MaxNonce {
		return Entry{}, fmt.Errorf("ledger entry nonce %d exceeds 2^53-1", nonce)
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
			return Entry{}, fmt.Errorf("ledger entry body: %w", err)
		}
	}
	v, err := jcs.Parse(raw)
	if err != nil {
		return Entry{}, fmt.Errorf("ledger entry body: %w", err)
	}
	if v.Kind != jcs.Object {
		return Entry{}, fmt.Errorf("ledger entry body: a JSON %s, want an object", v.Kind)
	}
	return Entry{
		Kind:      kind,
		Body:      v.Canonical(),
		Submitter: protocol.FormatEd25519Key(key.Public().(ed25519.PublicKey)),
		Nonce:     nonce,
		Time:      FormatTime(at),
	}, nil
}

// FormatTime writes t in TimeLayout (UTC, truncated to milliseconds).
func FormatTime(t time.Time) string { return t.UTC().Truncate(time.Millisecond).Format(TimeLayout) }

// DecodeEntry parses a transaction into a signed entry. It checks the form
// only — the one canonical form, field formats, sizes — not the signature
// (VerifySignature) nor anything the ledger's state decides. The
// transaction must be a strict JSON text (package jcs: no duplicate keys,
// even spelled with escapes; no lone surrogates; depth at most
// jcs.MaxDepth) equal byte for byte to its RFC 8785 form, holding exactly
// the members of SignedEntry. Errors wrap ErrMalformedEntry.
func DecodeEntry(tx []byte) (*SignedEntry, error) {
	if se := decodeLayout(tx); se != nil {
		return se, nil
	}
	se, err := decodeEntry(tx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedEntry, err)
	}
	return se, nil
}

// decodeLayout reads a transaction laid out exactly as Encode writes it,
// which every accepted transaction is: the body (parsed and checked
// canonical by jcs), then the other members at their fixed places. It
// accepts only what decodeEntry accepts, decoded to the same entry (the
// final comparison with Encode holds it to that; FuzzDecodeEntry checks
// the two against each other), and returns nil for anything else — a
// string with an escape, any error — which decodeEntry then judges and
// explains. It is decodeEntry without the generic parse of the whole
// transaction: about half the time.
func decodeLayout(tx []byte) *SignedEntry {
	const head = `"entry":{"body":`
	if len(tx) > MaxEntryBytes || len(tx) < len(head)+3 || tx[0] != '{' {
		return nil
	}
	// One copy of the transaction holds the entry's strings, and its tail
	// the body: one allocation instead of one per member.
	text := string(tx)
	var batch *Batch
	start := 1
	if tx[1] == '"' && tx[2] == 'b' {
		var rest string
		if batch, rest = layoutBatch(text[1:]); batch == nil {
			return nil
		}
		start = len(tx) - len(rest)
	}
	if len(tx) < start+len(head)+2 || string(tx[start:start+len(head)]) != head || tx[start+len(head)] != '{' {
		return nil
	}
	start += len(head)
	end := jcs.ObjectEnd(tx, start)
	if end < 0 {
		return nil
	}
	body := tx[start:end]
	rest := text[end:]
	kind, rest, ok := layoutString(rest, `,"kind":"`)
	if !ok || kind == "" || !utf8.ValidString(kind) {
		return nil
	}
	const nonceLabel = `,"nonce":`
	if len(rest) < len(nonceLabel) || rest[:len(nonceLabel)] != nonceLabel {
		return nil
	}
	rest = rest[len(nonceLabel):]
	n := 0
	for n < len(rest) && n < 20 && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	// The shortest form only: no leading zero.
	if n == 0 || (n > 1 && rest[0] == '0') {
		return nil
	}
	nonce, err := strconv.ParseUint(rest[:n], 10, 64)
	if err != nil || nonce > MaxNonce {
		return nil
	}
	sub, rest, ok := layoutString(rest[n:], `,"submitter":"`)
	if !ok {
		return nil
	}
	at, rest, ok := layoutString(rest, `,"time":"`)
	if !ok {
		return nil
	}
	sigText, rest, ok := layoutString(rest, `},"sig":"`)
	if !ok || rest != "}" {
		return nil
	}
	if _, err := protocol.ParseEd25519Key(sub); err != nil {
		return nil
	}
	var tb [len(TimeLayout) + 8]byte
	if ts, err := time.Parse(TimeLayout, at); err != nil || string(ts.UTC().Truncate(time.Millisecond).AppendFormat(tb[:0], TimeLayout)) != at {
		return nil
	}
	var sig [ed25519.SignatureSize + 3]byte
	if len(sigText) != base64.StdEncoding.EncodedLen(ed25519.SignatureSize) {
		return nil
	}
	if k, err := base64.StdEncoding.Strict().Decode(sig[:], []byte(sigText)); err != nil || k != ed25519.SignatureSize {
		return nil
	}
	bv, err := jcs.Parse(body)
	// The body sits two levels down in the transaction, whose depth jcs
	// bounds.
	if err != nil || bv.Kind != jcs.Object || depth(bv)+2 > jcs.MaxDepth {
		return nil
	}
	if string(bv.Canonical()) != string(body) {
		return nil
	}
	// Every other member was read from its fixed place as a string with
	// no escape or control character (layoutString), which is its
	// canonical form; the signature's strict base64 of 64 bytes and the
	// nonce without a leading zero are the only spellings of their
	// values; so tx is exactly what Encode writes for this entry, and
	// FuzzDecodeEntry holds this reader to the generic decoder.
	return &SignedEntry{
		Entry:     Entry{Kind: Kind(kind), Body: []byte(text[start:end]), Submitter: sub, Nonce: nonce, Time: at},
		Signature: bytes.Clone(sig[:ed25519.SignatureSize]),
		Batch:     batch,
	}
}

// layoutBatch reads a batch member from its fixed place at the start of
// b, as Encode writes it: count and index without leading zeros, the
// path's hashes in strict base64, the path as long as count and index make
// it. It returns the batch and what follows its comma, or nil.
func layoutBatch(b string) (*Batch, string) {
	const countLabel, indexLabel, pathLabel = `"batch":{"count":`, `,"index":`, `,"path":[`
	count, b, ok := layoutInt(b, countLabel)
	if !ok || count < 2 || count > MaxBatch {
		return nil, ""
	}
	index, b, ok := layoutInt(b, indexLabel)
	if !ok || index >= count {
		return nil, ""
	}
	if len(b) < len(pathLabel) || b[:len(pathLabel)] != pathLabel {
		return nil, ""
	}
	b = b[len(pathLabel):]
	n := batchPathLen(index, count)
	path := make([][32]byte, n)
	for i := range path {
		label := `"`
		if i > 0 {
			label = `,"`
		}
		var h string
		if h, b, ok = layoutString(b, label); !ok || !decodeHash(h, &path[i]) {
			return nil, ""
		}
	}
	if len(b) < 4 || b[:4] != `]},"` {
		return nil, ""
	}
	return &Batch{Count: count, Index: index, Path: path}, b[3:]
}

// layoutInt reads label, then a non-negative integer below 1000 without a
// leading zero.
func layoutInt(b, label string) (int, string, bool) {
	if len(b) < len(label) || b[:len(label)] != label {
		return 0, "", false
	}
	b = b[len(label):]
	n := 0
	for n < len(b) && n < 4 && b[n] >= '0' && b[n] <= '9' {
		n++
	}
	if n == 0 || n > 3 || (n > 1 && b[0] == '0') {
		return 0, "", false
	}
	v, _ := strconv.Atoi(b[:n])
	return v, b[n:], true
}

// decodeHash decodes the strict base64 of a 32-byte hash into h.
func decodeHash(s string, h *[32]byte) bool {
	var buf [33]byte
	var src [44]byte // base64 of 32 bytes, copied on the stack
	if len(s) != len(src) {
		return false
	}
	copy(src[:], s)
	k, err := base64.StdEncoding.Strict().Decode(buf[:], src[:])
	if err != nil || k != 32 {
		return false
	}
	*h = [32]byte(buf[:32])
	return true
}

// layoutString reads label, then a string without escapes up to its
// closing quote, from b.
func layoutString(b string, label string) (string, string, bool) {
	if len(b) < len(label) || b[:len(label)] != label {
		return "", "", false
	}
	b = b[len(label):]
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return b[:i], b[i+1:], true
		case c == '\\' || c < 0x20:
			return "", "", false
		}
	}
	return "", "", false
}

func decodeEntry(tx []byte) (*SignedEntry, error) {
	if len(tx) > MaxEntryBytes {
		return nil, fmt.Errorf("entry is %d bytes, limit %d", len(tx), MaxEntryBytes)
	}
	v, err := jcs.Parse(tx)
	if err != nil {
		return nil, fmt.Errorf("entry is not strict JSON: %v", err)
	}
	var batch *Batch
	if bv := v.Get("batch"); bv != nil {
		if err := only(v, "", "batch", "entry", "sig"); err != nil {
			return nil, err
		}
		if batch, err = decodeBatch(bv); err != nil {
			return nil, err
		}
	} else if err := only(v, "", "entry", "sig"); err != nil {
		return nil, err
	}
	ev := v.Get("entry")
	if err := only(ev, "entry", "body", "kind", "nonce", "submitter", "time"); err != nil {
		return nil, err
	}
	body := ev.Get("body")
	if body.Kind != jcs.Object {
		return nil, fmt.Errorf("entry body: a JSON %s, want an object", body.Kind)
	}
	kind, err := str(ev, "kind")
	if err != nil {
		return nil, err
	}
	if kind == "" {
		return nil, errors.New(`entry: empty "kind"`)
	}
	sub, err := str(ev, "submitter")
	if err != nil {
		return nil, err
	}
	if _, err := protocol.ParseEd25519Key(sub); err != nil {
		return nil, fmt.Errorf("entry submitter: %v", err)
	}
	at, err := str(ev, "time")
	if err != nil {
		return nil, err
	}
	if ts, err := time.Parse(TimeLayout, at); err != nil || FormatTime(ts) != at {
		return nil, fmt.Errorf("entry time %.40q: want UTC with milliseconds, like 2026-01-02T15:04:05.000Z", at)
	}
	nv := ev.Get("nonce")
	if nv.Kind != jcs.Number {
		return nil, fmt.Errorf(`entry: "nonce" is a JSON %s, want a number`, nv.Kind)
	}
	nonce, err := strconv.ParseUint(nv.Num, 10, 64)
	if err != nil || nonce > MaxNonce {
		return nil, fmt.Errorf("entry: nonce %.30s is not an integer from 0 to 2^53-1", nv.Num)
	}
	sigText, err := str(v, "sig")
	if err != nil {
		return nil, err
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(sigText)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("entry sig: not standard base64 of a %d-byte Ed25519 signature", ed25519.SignatureSize)
	}
	se := &SignedEntry{
		Entry:     Entry{Kind: Kind(kind), Body: body.Canonical(), Submitter: sub, Nonce: nonce, Time: at},
		Signature: sig,
		Batch:     batch,
	}
	if string(se.Encode()) != string(tx) {
		return nil, errors.New("entry is not in canonical JSON form (RFC 8785: sorted keys, no whitespace, minimal escapes, shortest numbers)")
	}
	return se, nil
}

// decodeBatch reads a batch member's "batch" object: its count, index and
// an audit path of the length they make.
func decodeBatch(v *jcs.Value) (*Batch, error) {
	if err := only(v, "entry batch", "count", "index", "path"); err != nil {
		return nil, err
	}
	num := func(name string, lo, hi int) (int, error) {
		m := v.Get(name)
		n, err := strconv.Atoi(m.Num)
		if m.Kind != jcs.Number || err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("entry batch: %q is not an integer from %d to %d", name, lo, hi)
		}
		return n, nil
	}
	count, err := num("count", 2, MaxBatch)
	if err != nil {
		return nil, err
	}
	index, err := num("index", 0, count-1)
	if err != nil {
		return nil, err
	}
	pv := v.Get("path")
	if pv.Kind != jcs.Array {
		return nil, fmt.Errorf(`entry batch: "path" is a JSON %s, want an array`, pv.Kind)
	}
	if n := batchPathLen(index, count); len(pv.Elems) != n {
		return nil, fmt.Errorf("entry batch: an audit path of %d hashes, want %d for entry %d of %d", len(pv.Elems), n, index, count)
	}
	b := &Batch{Count: count, Index: index, Path: make([][32]byte, len(pv.Elems))}
	for i, e := range pv.Elems {
		if e.Kind != jcs.String || !decodeHash(e.Str, &b.Path[i]) {
			return nil, fmt.Errorf("entry batch: path hash %d is not standard base64 of 32 bytes", i)
		}
	}
	return b, nil
}

// only checks that v is an object with exactly the members names.
func only(v *jcs.Value, where string, names ...string) error {
	if where == "" {
		where = "entry transaction"
	}
	if v.Kind != jcs.Object {
		return fmt.Errorf("%s: a JSON %s, want an object", where, v.Kind)
	}
	for _, n := range names {
		if v.Get(n) == nil {
			return fmt.Errorf("%s: missing %q", where, n)
		}
	}
	if len(v.Members) != len(names) {
		for _, m := range v.Members {
			known := false
			for _, n := range names {
				known = known || m.Key == n
			}
			if !known {
				return fmt.Errorf("%s: unknown member %.40q", where, m.Key)
			}
		}
	}
	return nil
}

func str(v *jcs.Value, name string) (string, error) {
	m := v.Get(name)
	if m.Kind != jcs.String {
		return "", fmt.Errorf("entry: %q is a JSON %s, want a string", name, m.Kind)
	}
	return m.Str, nil
}

// Depth is the nesting depth of a canonical JSON value: 0 for a scalar or
// an empty array or object, one more than its deepest member otherwise.
// The ledger's first rule version bounds entry bodies by it.
func Depth(doc []byte) (int, error) {
	v, err := jcs.Parse(doc)
	if err != nil {
		return 0, err
	}
	return depth(v), nil
}

func depth(v *jcs.Value) int {
	d := 0
	for _, e := range v.Elems {
		d = max(d, 1+depth(e))
	}
	for _, m := range v.Members {
		d = max(d, 1+depth(m.Value))
	}
	return d
}
