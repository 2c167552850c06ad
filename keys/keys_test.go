package keys

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cloisterhq/cloister/seal"
)

func seq(start byte) []byte {
	b := make([]byte, 32)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func TestSaveLoadRoundTrip(t *testing.T) {
	t.Parallel()
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "alice.key")
	if err := k.Save(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %04o, want 0600", fi.Mode().Perm())
	}
	k2, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !k.Public().Equal(k2.Public()) || !bytes.Equal(k.Signer(), k2.Signer()) {
		t.Fatal("loaded key differs from saved key")
	}
	// The loaded key opens what was sealed to the original's public key,
	// and its signatures verify under the original's signing key.
	env, err := seal.Seal(k.Public().Sealing, []byte("data"), []byte("i"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := k2.Open(env, []byte("i"), nil); err != nil || string(pt) != "data" {
		t.Fatalf("Open: %q, %v", pt, err)
	}
	if !ed25519.Verify(k.Public().Signing, []byte("m"), k2.Sign([]byte("m"))) {
		t.Fatal("signature of loaded key does not verify")
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries after Save", len(ents))
	}
}

func TestSaveRefusesOverwrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "k")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, _ := Generate()
	err := k.Save(path)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Save over existing file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Fatal("existing file was modified")
	}
	// A dangling symlink counts as existing too: Save must not follow it.
	link := filepath.Join(dir, "link")
	os.Symlink(filepath.Join(dir, "target"), link)
	if err := k.Save(link); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Save over dangling symlink: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "target")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("Save wrote through a symlink")
	}
}

func TestLoadRefusesOpenPermissions(t *testing.T) {
	t.Parallel()
	k, _ := Generate()
	path := filepath.Join(t.TempDir(), "k")
	if err := k.Save(path); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o602} {
		os.Chmod(path, mode)
		_, err := Load(path)
		if !errors.Is(err, ErrPermissions) || !strings.Contains(err.Error(), "chmod 600") || !strings.Contains(err.Error(), path) {
			t.Fatalf("mode %04o: %v", mode, err)
		}
	}
	os.Chmod(path, 0o400)
	if _, err := Load(path); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
	if _, err := Load(filepath.Dir(path)); !errors.Is(err, ErrFormat) {
		t.Fatalf("directory: %v", err)
	}
	if _, err := Load(path + ".missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
}

func TestFileFormat(t *testing.T) {
	t.Parallel()
	k, err := FromSeeds(seq(0), seq(0x40))
	if err != nil {
		t.Fatal(err)
	}
	data, err := k.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("%d lines:\n%s", len(lines), data)
	}
	want := []string{
		FileHeader,
		"ed25519 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
		"hpke ZHpAQUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVpbXF1eXw==",
	}
	for i, w := range want {
		if lines[3+i] != w {
			t.Fatalf("line %d = %q, want %q", 4+i, lines[3+i], w)
		}
	}
	if lines[1] != "# signing_key: "+k.Public().SigningString() {
		t.Fatalf("comment line: %q", lines[1])
	}
	// The Ed25519 public key of seed 00..1f (RFC 8032 style derivation).
	if got := k.Public().SigningString(); got != "ed25519:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=" {
		t.Fatalf("signing string %s", got)
	}
	// Only the non-comment lines matter.
	k2, err := Parse([]byte(strings.Join(want, "\n") + "\n"))
	if err != nil || !k2.Public().Equal(k.Public()) {
		t.Fatalf("parse without comments: %v", err)
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	k, _ := FromSeeds(seq(0), seq(0x40))
	good, _ := k.Marshal()
	g := string(good)
	cases := map[string]string{
		"empty":           "",
		"no newline":      strings.TrimSuffix(g, "\n"),
		"crlf":            strings.ReplaceAll(g, "\n", "\r\n"),
		"wrong header":    strings.Replace(g, FileHeader, "cloister-key-v2", 1),
		"missing hpke":    g[:strings.Index(g, "hpke ")],
		"extra line":      g + "extra\n",
		"blank line":      g + "\n",
		"short seed":      strings.Replace(g, "ed25519 AAEC", "ed25519 AAE", 1),
		"bad base64":      strings.Replace(g, "ed25519 AAEC", "ed25519 *AEC", 1),
		"trailing space":  strings.Replace(g, "Hh8=\n", "Hh8= \n", 1),
		"swapped lines":   strings.Join([]string{FileHeader, "hpke ZHpAQUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVpbXF1eXw==", "ed25519 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}, "\n") + "\n",
		"other KEM":       strings.Replace(g, "hpke ZHpA", "hpke ACBA", 1),
		"unpadded base64": strings.Replace(g, "Hh8=\n", "Hh8\n", 1),
		"too large":       "#" + strings.Repeat("x", MaxFileSize) + "\n" + g,
	}
	for name, in := range cases {
		if _, err := Parse([]byte(in)); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err = %v, want ErrFormat", name, err)
		}
	}
}

func TestPublicStrings(t *testing.T) {
	t.Parallel()
	k, _ := Generate()
	p := k.Public()
	sig, err := ParseSigningKey(p.SigningString())
	if err != nil || !sig.Equal(p.Signing) {
		t.Fatalf("signing round trip: %v", err)
	}
	sk, err := ParseSealingKey(p.SealingString())
	if err != nil || !bytes.Equal(sk.Bytes(), p.Sealing.Bytes()) {
		t.Fatalf("sealing round trip: %v", err)
	}
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(p.SealingString(), "hpke:"))
	if len(raw) != 2+1216 || raw[0] != 0x64 || raw[1] != 0x7a {
		t.Fatalf("sealing string does not hold the KEM id and a 1216-byte key: %d bytes % x", len(raw), raw[:2])
	}
	s := p.SigningString()
	bad := []string{
		"", "ed25519:", s[len("ed25519:"):], "ED25519:" + s[8:], "hpke:" + s[8:],
		s[:len(s)-1], s + "AAAA", s[:20] + "\n" + s[20:], s[:len(s)-1] + "?",
		"ed25519:" + strings.Repeat("A", 43) + "=" + "=",
	}
	for _, b := range bad {
		if _, err := ParseSigningKey(b); !errors.Is(err, ErrFormat) {
			t.Errorf("ParseSigningKey(%q) = %v, want ErrFormat", b, err)
		}
	}
	ss := p.SealingString()
	for _, b := range []string{"", "hpke:", s, ss[:len(ss)-4], "hpke:" + s[8:], ss[:100] + "\r\n" + ss[100:]} {
		if _, err := ParseSealingKey(b); !errors.Is(err, ErrFormat) {
			t.Errorf("ParseSealingKey(%.20q…) = %v, want ErrFormat", b, err)
		}
	}
}

func TestLoadOrCreate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "platform.key")
	k1, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("first: created=%v err=%v", created, err)
	}
	k2, created, err := LoadOrCreate(path)
	if err != nil || created || !k1.Public().Equal(k2.Public()) {
		t.Fatalf("second: created=%v err=%v", created, err)
	}
	// Racing creators agree on one key.
	path = filepath.Join(t.TempDir(), "platform.key")
	var wg sync.WaitGroup
	pubs := make([]PublicKey, 8)
	for i := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, _, err := LoadOrCreate(path)
			if err != nil {
				t.Error(err)
				return
			}
			pubs[i] = k.Public()
		}()
	}
	wg.Wait()
	for _, p := range pubs[1:] {
		if !p.Equal(pubs[0]) {
			t.Fatal("racing LoadOrCreate returned different keys")
		}
	}
}

func FuzzParse(f *testing.F) {
	k, _ := FromSeeds(seq(0), seq(0x40))
	good, _ := k.Marshal()
	f.Add(good)
	f.Add([]byte(FileHeader + "\n"))
	f.Add([]byte("# comment\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error is not ErrFormat: %v", err)
			}
			return
		}
		// Whatever parses must re-marshal to a file that parses to the
		// same key.
		again, err := k.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		k2, err := Parse(again)
		if err != nil || !k2.Public().Equal(k.Public()) {
			t.Fatalf("re-marshal round trip: %v", err)
		}
	})
}

func FuzzParseKeyStrings(f *testing.F) {
	k, _ := FromSeeds(seq(0), seq(0x40))
	f.Add(k.Public().SigningString())
	f.Add(k.Public().SealingString())
	f.Add("ed25519:")
	f.Fuzz(func(t *testing.T, s string) {
		if pub, err := ParseSigningKey(s); err == nil && FormatSigningKey(pub) != s {
			t.Fatalf("signing key %q is not canonical", s)
		}
		if pub, err := ParseSealingKey(s); err == nil && FormatSealingKey(pub) != s {
			t.Fatalf("sealing key %q is not canonical", s)
		}
	})
}
