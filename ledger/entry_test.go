package ledger

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
)

func TestCanonicalize(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{ "b": 1, "a": [true, null, "x"] }`, `{"a":[true,null,"x"],"b":1}`},
		{`{"n": 1.0e2, "m": -0, "f": 0.000001, "g": 1e21}`, `{"f":0.000001,"g":1e+21,"m":0,"n":100}`},
		{`{"s": "<&>\u00e9\u0001"}`, "{\"s\":\"<&>\u00e9\\u0001\"}"},
		{`{"\u20ac": 1, "\ud83d\ude00": 2, "z": 3}`, "{\"z\":3,\"\u20ac\":1,\"\U0001F600\":2}"},
	}
	for _, c := range cases {
		got, err := Canonicalize([]byte(c.in))
		if err != nil {
			t.Fatalf("Canonicalize(%s): %v", c.in, err)
		}
		if string(got) != c.want {
			t.Errorf("Canonicalize(%s) = %s, want %s", c.in, got, c.want)
		}
	}
	for _, bad := range []string{`{"a":1,"a":2}`, `{"a":1} {}`, `{"a":1e400}`, "{\"a\":\"\xff\"}", `[` + strings.Repeat(`[`, 40) + strings.Repeat(`]`, 41)} {
		if _, err := Canonicalize([]byte(bad)); err == nil {
			t.Errorf("Canonicalize(%q) accepted invalid input", bad)
		}
	}
}

func TestEntrySignDecodeVerify(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	at := time.Date(2026, 11, 22, 9, 0, 0, 123456789, time.UTC)
	se, err := NewEntryWithNonce(key, KindNote, map[string]any{"text": "hello", "a": 1}, 42, at)
	if err != nil {
		t.Fatal(err)
	}
	tx := se.Encode()
	want := `{"entry":{"body":{"a":1,"text":"hello"},"kind":"note","nonce":42,"submitter":"` + protocol.FormatEd25519Key(key.Public().(ed25519.PublicKey)) + `","time":"2026-11-22T09:00:00.123Z"},"sig":"`
	if !bytes.HasPrefix(tx, []byte(want)) {
		t.Fatalf("encoding = %s\nwant prefix %s", tx, want)
	}
	got, err := DecodeEntry(tx)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.VerifySignature(); err != nil {
		t.Fatalf("valid entry: %v", err)
	}
	if !bytes.Equal(got.Encode(), tx) {
		t.Fatal("decode/encode is not the identity")
	}
	// Tampered body: still canonical, signature must fail.
	bad := bytes.Replace(tx, []byte(`"hello"`), []byte(`"jello"`), 1)
	be, err := DecodeEntry(bad)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.VerifySignature(); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered entry: err = %v, want ErrBadSignature", err)
	}
	// Non-canonical re-encodings of the same entry are refused.
	spaced := bytes.Replace(tx, []byte(`"a":1`), []byte(`"a": 1`), 1)
	if _, err := DecodeEntry(spaced); err == nil || !strings.Contains(err.Error(), "canonical") {
		t.Fatalf("non-canonical entry: err = %v", err)
	}
	if _, err := DecodeEntry([]byte(`{"entry":{}}`)); err == nil {
		t.Fatal("empty entry accepted")
	}
	if h := LeafHash(tx); h == LeafHash(bad) {
		t.Fatal("leaf hashes of different entries collide")
	}
}

func FuzzDecodeEntry(f *testing.F) {
	_, key, _ := ed25519.GenerateKey(nil)
	se, _ := NewEntryWithNonce(key, KindNote, map[string]any{"x": "y"}, 1, time.Unix(0, 0))
	f.Add(se.Encode())
	f.Add([]byte(`{"entry":{"body":{},"kind":"note","nonce":1,"submitter":"ed25519:","time":""},"sig":""}`))
	f.Fuzz(func(t *testing.T, tx []byte) {
		e, err := DecodeEntry(tx)
		if err != nil {
			return
		}
		if !bytes.Equal(e.Encode(), tx) {
			t.Fatalf("accepted entry does not re-encode to its own bytes")
		}
		_ = e.VerifySignature()
	})
}

func FuzzCanonicalize(f *testing.F) {
	f.Add([]byte(`{"b":[1,2.5,"x"],"a":{"c":null}}`))
	f.Add([]byte(`"\u0000"`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := Canonicalize(doc)
		if err != nil {
			return
		}
		c2, err := Canonicalize(c)
		if err != nil || !bytes.Equal(c, c2) {
			t.Fatalf("canonical form is not a fixed point: %q -> %q (%v)", c, c2, err)
		}
	})
}
