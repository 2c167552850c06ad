package verify

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/jcs"
)

var update = flag.Bool("update", false, "rewrite testdata/*.json from the code")

// entryVector is one case of testdata/entries.json.
type entryVector struct {
	Name string `json:"name"`
	Tx   string `json:"tx"`
	// Valid: DecodeEntry accepts Tx. The fields below are set only then.
	Valid          bool   `json:"valid"`
	LeafHash       string `json:"leaf_hash,omitempty"`
	SignatureValid *bool  `json:"signature_valid,omitempty"`
	Kind           string `json:"kind,omitempty"`
	Submitter      string `json:"submitter,omitempty"`
	Nonce          uint64 `json:"nonce,omitempty"`
	Time           string `json:"time,omitempty"`
	Body           string `json:"body,omitempty"`
}

type entryVectors struct {
	Comment string        `json:"comment"`
	Entries []entryVector `json:"entries"`
}

func seedKey(b byte) ed25519.PrivateKey { return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, 32)) }

var vectorTime = time.Date(2026, 1, 2, 3, 4, 5, 678e6, time.UTC)

// nested returns a body whose deepest value is depth levels below it.
func nested(depth int) any {
	var v any = "leaf"
	for range depth - 1 {
		v = []any{v}
	}
	return map[string]any{"a": v}
}

// signRaw signs an entry whose body is given as raw bytes, bypassing
// NewEntry's checks, so that a vector can carry exactly one defect.
func signRaw(key ed25519.PrivateKey, kind, body string, nonce uint64, at string) []byte {
	e := Entry{Kind: Kind(kind), Body: json.RawMessage(body), Submitter: formatKey(key), Nonce: nonce, Time: at}
	se := &SignedEntry{Entry: e, Signature: ed25519.Sign(key, e.SigningMessage())}
	return se.Encode()
}

func formatKey(k ed25519.PrivateKey) string {
	return "ed25519:" + b64(k.Public().(ed25519.PublicKey))
}

func makeEntryVectors(t *testing.T) *entryVectors {
	t.Helper()
	key := seedKey(1)
	at := FormatTime(vectorTime)
	mk := func(kind Kind, body any, nonce uint64) []byte {
		se, err := NewEntryWithNonce(key, kind, body, nonce, vectorTime)
		if err != nil {
			t.Fatal(err)
		}
		return se.Encode()
	}
	hello := mk("note", map[string]any{"text": "hello"}, 1)
	v := &entryVectors{Comment: "Ledger entries as transactions: every valid one decodes to the fields given, hashes to leaf_hash " +
		"(SHA-256 of 0x00 then the bytes) and has the signature validity given; every invalid one must be refused by a decoder, " +
		"its defect named in its name. Submitters' keys are Ed25519 keys from the seed of 32 bytes 0x01 (and 0x02)."}
	valid := func(name string, tx []byte) {
		v.Entries = append(v.Entries, entryVector{Name: name, Tx: string(tx), Valid: true})
	}
	invalid := func(name string, tx []byte) {
		v.Entries = append(v.Entries, entryVector{Name: name, Tx: string(tx)})
	}
	valid("a note", hello)
	valid("a body with non-ASCII, separators, HTML characters and numbers in their shortest form",
		mk("note", json.RawMessage(`{"😀":true,"é":"\u2028<>&","n":[1e21,1.5e-7,-0,9007199254740991,0.1]}`), 2))
	valid("an empty body", mk("note", map[string]any{}, 0))
	valid("the largest nonce", mk("session.event", map[string]any{"session": "s"}, MaxNonce))
	valid("a body 62 levels deep: the transaction is 64 deep, the most the canonical form takes", mk("note", nested(62), 3))
	valid("another submitter", func() []byte {
		se, _ := NewEntryWithNonce(seedKey(2), "note", map[string]any{"text": "hello"}, 1, vectorTime)
		return se.Encode()
	}())
	valid("a bad signature: the body was changed after signing", bytes.Replace(hello, []byte(`"hello"`), []byte(`"jello"`), 1))

	s := string(hello)
	invalid("whitespace between members", []byte(strings.Replace(s, `,"sig"`, `, "sig"`, 1)))
	invalid("a trailing newline", append(bytes.Clone(hello), '\n'))
	invalid("a byte order mark", append([]byte("\xef\xbb\xbf"), hello...))
	invalid("members out of order", []byte(`{"sig":`+s[strings.Index(s, `"sig":`)+6:len(s)-1]+`,"entry":`+s[len(`{"entry":`):strings.Index(s, `,"sig":`)]+`}`))
	invalid("a duplicate key spelled with an escape", []byte(strings.Replace(s, `"kind":"note"`, `"kind":"note","k\u0069nd":"note"`, 1)))
	invalid("a character escaped that the canonical form writes raw", signRaw(key, "note", `{"text":"\u0041"}`, 4, at))
	invalid("a lone surrogate in the body", signRaw(key, "note", `{"text":"\ud800"}`, 5, at))
	invalid("a number not in its shortest form", signRaw(key, "note", `{"n":1.0}`, 6, at))
	invalid("an integer beyond 2^53 that a double cannot hold", signRaw(key, "note", `{"n":9007199254740993}`, 7, at))
	invalid("a number beyond the double range", signRaw(key, "note", `{"n":1e400}`, 8, at))
	invalid("a body 63 levels deep: the transaction is 65 deep", signRaw(key, "note", string(mustJSON(t, nested(63))), 9, at))
	invalid("a body that is not an object", signRaw(key, "note", `[]`, 10, at))
	invalid("an empty kind", signRaw(key, "", `{}`, 11, at))
	invalid("a nonce of 2^53", []byte(strings.Replace(s, `"nonce":1,`, `"nonce":9007199254740992,`, 1)))
	invalid("a negative nonce", []byte(strings.Replace(s, `"nonce":1,`, `"nonce":-1,`, 1)))
	invalid("a fractional nonce", []byte(strings.Replace(s, `"nonce":1,`, `"nonce":1.5,`, 1)))
	invalid("a nonce given as a string", []byte(strings.Replace(s, `"nonce":1,`, `"nonce":"1",`, 1)))
	invalid("a time without milliseconds", signRaw(key, "note", `{}`, 12, "2026-01-02T03:04:05Z"))
	invalid("a time with an offset", signRaw(key, "note", `{}`, 13, "2026-01-02T03:04:05.678+00:00"))
	sub := formatKey(key)
	invalid("a submitter key spelled with a line break", []byte(strings.Replace(s, sub, sub[:20]+`\n`+sub[20:], 1)))
	invalid("a submitter key without its prefix", []byte(strings.Replace(s, sub, sub[len("ed25519:"):], 1)))
	invalid("an unknown member in the entry", []byte(strings.Replace(s, `"time":`, `"tag":"x","time":`, 1)))
	invalid("no signature", []byte(s[:strings.Index(s, `,"sig":`)]+`}`))
	invalid("a signature of 63 bytes", []byte(s[:strings.Index(s, `,"sig":"`)+8]+b64(bytes.Repeat([]byte{1}, 63))+`"}`))
	sigAt := strings.Index(s, `,"sig":"`) + len(`,"sig":"`)
	if !strings.ContainsAny(s[sigAt:], "+/") {
		t.Fatal("the note's signature has no character URL-safe base64 spells otherwise")
	}
	invalid("a signature in URL-safe base64", []byte(s[:sigAt]+strings.NewReplacer("+", "-", "/", "_").Replace(s[sigAt:])))

	// Batch-signed entries (rule version 18): one signature over the root
	// of the batch's tree, each member carrying its audit path.
	batch := func(n int) []string {
		items := make([]BatchItem, n)
		for i := range items {
			items[i] = BatchItem{Kind: "note", Body: map[string]any{"seq": i}, Nonce: uint64(100 + i), Time: vectorTime}
		}
		ses, err := SignBatch(key, items)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]string, n)
		for i, se := range ses {
			out[i] = string(se.Encode())
		}
		return out
	}
	three := batch(3)
	valid("the first of a batch of three", []byte(three[0]))
	valid("the last of a batch of three: an audit path of one hash", []byte(three[2]))
	valid("the last of a batch of 256: an audit path of eight hashes", []byte(batch(MaxBatch)[MaxBatch-1]))
	valid("a bad signature: a batch member's body was changed after signing", []byte(strings.Replace(three[1], `"seq":1`, `"seq":7`, 1)))
	valid("a bad signature: a batch member's index was changed", []byte(strings.Replace(three[0], `"index":0`, `"index":1`, 1)))
	b0, b2 := three[0], three[2]
	hashOf := func(tx string) string {
		at := strings.Index(tx, `"path":["`) + len(`"path":["`)
		return tx[at : at+44]
	}
	firstHash, lastHash := hashOf(b0), hashOf(b2)
	flipped := "B" + lastHash[1:]
	if lastHash[0] == 'B' {
		flipped = "C" + lastHash[1:]
	}
	valid("a bad signature: a batch member's path hash was changed", []byte(strings.Replace(b2, lastHash, flipped, 1)))
	invalid("a batch of one", []byte(strings.Replace(strings.Replace(b2, `"count":3,"index":2`, `"count":1,"index":0`, 1), `["`+lastHash+`"]`, `[]`, 1)))
	invalid("a batch member's audit path one hash short", []byte(strings.Replace(b0, `"path":["`+firstHash+`",`, `"path":[`, 1)))
	invalid("a batch member's audit path one hash long", []byte(strings.Replace(b0, `"path":["`, `"path":["`+firstHash+`","`, 1)))
	invalid("a batch index beyond its count", []byte(strings.Replace(b0, `"index":0`, `"index":3`, 1)))
	invalid("a batch count of 257", []byte(strings.Replace(b0, `"count":3`, `"count":257`, 1)))
	invalid("a batch count with a leading zero", []byte(strings.Replace(b0, `"count":3`, `"count":03`, 1)))
	invalid("a batch count given as a string", []byte(strings.Replace(b0, `"count":3`, `"count":"3"`, 1)))
	invalid("a batch path hash of 31 bytes", []byte(strings.Replace(b0, firstHash, b64(bytes.Repeat([]byte{7}, 31)), 1)))
	invalid("an unknown member in the batch", []byte(strings.Replace(b0, `"count":3,`, `"count":3,"extra":1,`, 1)))
	invalid("the batch after the entry", []byte(`{"entry":`+b0[strings.Index(b0, `"entry":`)+8:strings.Index(b0, `,"sig":`)]+`,`+b0[1:strings.Index(b0, `,"entry":`)]+b0[strings.Index(b0, `,"sig":`):]))

	for i := range v.Entries {
		e := &v.Entries[i]
		se, err := DecodeEntry([]byte(e.Tx))
		if e.Valid != (err == nil) {
			t.Fatalf("%s: DecodeEntry: %v, want valid=%v\n%s", e.Name, err, e.Valid, e.Tx)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformedEntry) {
				t.Fatalf("%s: error %v does not wrap ErrMalformedEntry", e.Name, err)
			}
			continue
		}
		lh := LeafHash([]byte(e.Tx))
		ok := se.VerifySignature() == nil
		e.LeafHash, e.SignatureValid = hex.EncodeToString(lh[:]), &ok
		e.Kind, e.Submitter, e.Nonce, e.Time, e.Body = string(se.Entry.Kind), se.Entry.Submitter, se.Entry.Nonce, se.Entry.Time, string(se.Entry.Body)
	}
	return v
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEntryVectors checks the code against testdata/entries.json, and the
// file against the code (go test -update rewrites it).
func TestEntryVectors(t *testing.T) {
	t.Parallel()
	got := makeEntryVectors(t)
	b, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	const path = "testdata/entries.json"
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("%s no longer matches what the code does; if the change is meant, rerun with -update and review the diff", path)
	}
	// The file read back by a decoder that knows only the file.
	var file entryVectors
	if err := json.Unmarshal(want, &file); err != nil {
		t.Fatal(err)
	}
	for _, e := range file.Entries {
		se, err := DecodeEntry([]byte(e.Tx))
		if (err == nil) != e.Valid {
			t.Errorf("%s: DecodeEntry: %v, want valid=%v", e.Name, err, e.Valid)
			continue
		}
		if err != nil {
			continue
		}
		lh := LeafHash([]byte(e.Tx))
		if hex.EncodeToString(lh[:]) != e.LeafHash || (se.VerifySignature() == nil) != *e.SignatureValid {
			t.Errorf("%s: leaf hash or signature validity differs from the file", e.Name)
		}
	}
}

// TestNewEntryRefusesWhatDecodeRefuses: an entry that could not be decoded
// is never signed.
func TestNewEntryRefusesWhatDecodeRefuses(t *testing.T) {
	t.Parallel()
	key := seedKey(1)
	for name, body := range map[string]any{
		"array body":      []int{1},
		"lone surrogate":  json.RawMessage(`{"t":"\ud800"}`),
		"duplicate key":   json.RawMessage(`{"a":1,"\u0061":2}`),
		"too deep":        nested(63),
		"too large":       map[string]string{"x": strings.Repeat("x", MaxEntryBytes)},
		"number too big":  json.RawMessage(`{"n":1e400}`),
		"trailing data":   json.RawMessage(`{} {}`),
		"not JSON at all": json.RawMessage(`{`),
	} {
		if se, err := NewEntryWithNonce(key, "note", body, 1, vectorTime); err == nil {
			t.Errorf("%s: signed %s", name, se.Encode())
		}
	}
	if _, err := NewEntryWithNonce(key, "note", map[string]any{}, MaxNonce+1, vectorTime); err == nil {
		t.Error("nonce 2^53 signed")
	}
	if _, err := NewEntryWithNonce(key, "", map[string]any{}, 1, vectorTime); err == nil {
		t.Error("empty kind signed")
	}
}

// TestNewEntryCanonicalisesBody: any spelling of a body signs the same.
func TestNewEntryCanonicalisesBody(t *testing.T) {
	t.Parallel()
	key := seedKey(1)
	a, err := NewEntryWithNonce(key, "note", json.RawMessage(" {\"b\": 1.0, \"a\": \"\\u00e9\"} "), 1, vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewEntryWithNonce(key, "note", map[string]any{"a": "é", "b": 1}, 1, vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Encode(), b.Encode()) || string(a.Entry.Body) != `{"a":"é","b":1}` {
		t.Fatalf("two spellings of one body signed differently:\n%s\n%s", a.Encode(), b.Encode())
	}
}

func TestDepth(t *testing.T) {
	t.Parallel()
	for doc, want := range map[string]int{`1`: 0, `[]`: 0, `{}`: 0, `[1]`: 1, `{"a":[]}`: 1, `{"a":[[],[1,{"b":2}]]}`: 4} {
		if got, err := Depth([]byte(doc)); err != nil || got != want {
			t.Errorf("Depth(%s) = %d, %v; want %d", doc, got, err, want)
		}
	}
	d, _ := Depth(mustJSON(t, nested(33)))
	if d != 33 {
		t.Errorf("nested(33) has depth %d", d)
	}
}

// FuzzDecodeEntry: bytes from the network never panic the decoder, and
// whatever it accepts is exactly its own encoding, so one entry has one
// transaction and one leaf hash.
func FuzzDecodeEntry(f *testing.F) {
	b, err := os.ReadFile("testdata/entries.json")
	if err != nil {
		f.Fatal(err)
	}
	var v entryVectors
	if err := json.Unmarshal(b, &v); err != nil {
		f.Fatal(err)
	}
	for _, e := range v.Entries {
		f.Add([]byte(e.Tx))
	}
	f.Fuzz(func(t *testing.T, tx []byte) {
		// The fixed-layout reader accepts only what the generic decoder
		// accepts, as the same entry.
		slow, slowErr := decodeEntry(tx)
		if fast := decodeLayout(tx); fast != nil {
			if slowErr != nil {
				t.Fatalf("the layout reader accepted what the decoder refuses (%v): %q", slowErr, tx)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("the layout reader and the decoder disagree on %q:\n%+v\n%+v", tx, fast, slow)
			}
		}
		se, err := DecodeEntry(tx)
		if (err == nil) != (slowErr == nil) {
			t.Fatalf("DecodeEntry says %v, the decoder %v", err, slowErr)
		}
		if err != nil {
			return
		}
		if !bytes.Equal(se.Encode(), tx) {
			t.Fatalf("accepted a transaction that is not its own encoding:\n%q\n%q", tx, se.Encode())
		}
		if c, err := jcs.Canonicalize(tx); err != nil || !bytes.Equal(c, tx) {
			t.Fatalf("accepted a transaction that is not RFC 8785 canonical: %v", err)
		}
	})
}

// TestLayoutReaderTakesTypicalEntries: the fixed-layout reader (not only
// the generic decoder) takes entries as NewEntry makes them, so the fuzz
// target's comparison of the two is not vacuous.
func TestLayoutReaderTakesTypicalEntries(t *testing.T) {
	t.Parallel()
	for _, body := range []string{`{}`, `{"a":[1,{"b":"c\n"}],"z":null}`, `{"text":"é \"quoted\""}`} {
		se, err := NewEntryWithNonce(seedKey(3), "note", []byte(body), 7, time.Unix(1_800_000_000, 0))
		if err != nil {
			t.Fatal(err)
		}
		got := decodeLayout(se.Encode())
		if got == nil || !reflect.DeepEqual(got, se) {
			t.Errorf("body %s: layout reader gave %+v, want %+v", body, got, se)
		}
	}
}
