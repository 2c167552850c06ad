package sealed

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"filippo.io/age"
)

// chunk is age's STREAM chunk size; encChunk adds the Poly1305 tag.
const (
	chunk    = 64 << 10
	encChunk = chunk + 16
)

func pseudoRandom(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed)})
	r.Read(b)
	return b
}

func sealBytes(t testing.TB, pt []byte) ([]byte, *Key, Summary) {
	t.Helper()
	var ct bytes.Buffer
	k, s, err := Seal(&ct, bytes.NewReader(pt))
	if err != nil {
		t.Fatal(err)
	}
	return ct.Bytes(), k, s
}

func openBytes(ct []byte, k *Key) ([]byte, error) {
	var out bytes.Buffer
	_, _, err := Open(&out, bytes.NewReader(ct), k, nil)
	return out.Bytes(), err
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, chunk - 1, chunk, chunk + 1, 3*chunk + 17} {
		pt := pseudoRandom(n, uint64(n))
		ct, k, s := sealBytes(t, pt)
		if want := sha256.Sum256(pt); s.SHA256 != hex.EncodeToString(want[:]) {
			t.Errorf("%d bytes: summary sha256 %s, want %x", n, s.SHA256, want)
		}
		if want := sha256.Sum256(ct); s.Digest != "sha256:"+hex.EncodeToString(want[:]) || s.Size != int64(len(ct)) {
			t.Errorf("%d bytes: summary %+v does not describe the %d-byte ciphertext", n, s, len(ct))
		}
		got, err := openBytes(ct, k)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("%d bytes: open: %v (equal %v)", n, err, bytes.Equal(got, pt))
		}
		// Two seals of the same plaintext share nothing: fresh key, fresh nonce.
		ct2, k2, _ := sealBytes(t, pt)
		if *k == *k2 || bytes.Equal(ct, ct2) {
			t.Errorf("%d bytes: two seals gave the same key or ciphertext", n)
		}
	}
}

// payloadStart is where the nonce ends and the first chunk begins.
func payloadStart(t *testing.T, ct []byte) int {
	t.Helper()
	i := bytes.Index(ct, []byte("\n--- "))
	if i < 0 {
		t.Fatal("no header end")
	}
	j := bytes.IndexByte(ct[i+1:], '\n')
	return i + 1 + j + 1 + 16
}

func TestTamperingRefused(t *testing.T) {
	t.Parallel()
	pt := pseudoRandom(3*chunk+100, 7)
	ct, k, _ := sealBytes(t, pt)
	p := payloadStart(t, ct)
	if len(ct) != p+3*encChunk+100+16 {
		t.Fatalf("unexpected layout: %d bytes, payload at %d", len(ct), p)
	}
	swap := bytes.Clone(ct)
	copy(swap[p:], ct[p+encChunk:p+2*encChunk])
	copy(swap[p+encChunk:], ct[p:p+encChunk])
	dropMiddle := append(bytes.Clone(ct[:p+encChunk]), ct[p+2*encChunk:]...)
	flip := func(i int) []byte { c := bytes.Clone(ct); c[i] ^= 1; return c }
	// The MAC is base64 in the header: change a character to another
	// base64 character (flipping a bit can make it no base64 at all, a
	// format error rather than a wrong MAC).
	macChanged := func(c []byte, i int) []byte {
		c = bytes.Clone(c)
		if c[i] == 'A' {
			c[i] = 'B'
		} else {
			c[i] = 'A'
		}
		return c
	}

	cases := []struct {
		name string
		ct   []byte
		want error
	}{
		{"truncated mid-chunk", ct[:len(ct)-50], ErrTampered},
		{"truncated at a chunk boundary", ct[:p+2*encChunk], ErrTampered},
		{"last chunk removed", ct[:p+3*encChunk], ErrTampered},
		{"chunks reordered", swap, ErrTampered},
		{"a chunk removed", dropMiddle, ErrTampered},
		{"data appended", append(bytes.Clone(ct), 0), ErrTampered},
		{"payload bit flipped", flip(p + encChunk + 5), ErrTampered},
		{"nonce bit flipped", flip(p - 3), ErrTampered},
		{"header MAC changed", macChanged(ct, p-20), ErrWrongKey},
		{"header cut", ct[:20], ErrFormat},
		{"empty", nil, ErrFormat},
	}
	for _, c := range cases {
		got, err := openBytes(c.ct, k)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", c.name, err, c.want)
		}
		// No plaintext past the last chunk that authenticated leaks out.
		if len(got) > 0 && !bytes.Equal(got, pt[:len(got)]) {
			t.Errorf("%s: released %d bytes that are not a prefix of the plaintext", c.name, len(got))
		}
	}
	if got, err := openBytes(ct, k); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("original no longer opens: %v", err)
	}
}

func TestWrongKeyAndForeignFiles(t *testing.T) {
	t.Parallel()
	ct, k, _ := sealBytes(t, []byte("program"))
	other := *k
	other[0] ^= 1
	if _, err := openBytes(ct, &other); !errors.Is(err, ErrWrongKey) {
		t.Errorf("wrong key: %v, want ErrWrongKey", err)
	}
	// An ordinary age file (X25519 recipient) is not a sealed file, even
	// with the right file key.
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, _ := age.Encrypt(&buf, id.Recipient())
	w.Write([]byte("x"))
	w.Close()
	if _, err := openBytes(buf.Bytes(), k); !errors.Is(err, ErrFormat) {
		t.Errorf("age X25519 file: %v, want ErrFormat", err)
	}
	// A sealed file opens with age's own API given the content key: the
	// payload is age's, unchanged.
	r, err := age.Decrypt(bytes.NewReader(ct), age.NewInjectedFileKeyIdentity(k[:]))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(r); string(got) != "program" {
		t.Errorf("age.Decrypt with the content key gave %q", got)
	}
}

func TestPlaintextHashChecked(t *testing.T) {
	t.Parallel()
	ct, k, s := sealBytes(t, []byte("weights"))
	var want [32]byte
	hex.Decode(want[:], []byte(s.SHA256))
	if _, _, err := Open(io.Discard, bytes.NewReader(ct), k, &want); err != nil {
		t.Fatal(err)
	}
	want[0] ^= 1
	if _, _, err := Open(io.Discard, bytes.NewReader(ct), k, &want); !errors.Is(err, ErrPlaintextHash) {
		t.Errorf("got %v, want ErrPlaintextHash", err)
	}
}

type failingReader struct{ r io.Reader }

var errDisk = errors.New("disk on fire")

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, errDisk
	}
	return n, err
}

func TestSourceErrorIsNotTampering(t *testing.T) {
	t.Parallel()
	ct, k, _ := sealBytes(t, pseudoRandom(2*chunk, 3))
	_, _, err := Open(io.Discard, &failingReader{bytes.NewReader(ct[:chunk])}, k, nil)
	if !errors.Is(err, errDisk) || errors.Is(err, ErrTampered) {
		t.Errorf("got %v, want the source's own error", err)
	}
}

func TestKeyFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, k, s := sealBytes(t, []byte("abc"))
	path := filepath.Join(dir, "p.key")
	if err := SaveKeyFile(path, k, s); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	k2, s2, err := LoadKeyFile(path)
	if err != nil || *k2 != *k || s2 != s {
		t.Fatalf("load: %v %v %v", err, k2, s2)
	}
	if err := SaveKeyFile(path, k, s); !errors.Is(err, os.ErrExist) {
		t.Errorf("overwrite: %v, want ErrExist", err)
	}
	os.Chmod(path, 0o644)
	if _, _, err := LoadKeyFile(path); !errors.Is(err, ErrKeyFile) {
		t.Errorf("0644 key file: %v, want ErrKeyFile", err)
	}
	good := MarshalKeyFile(k, s)
	for name, data := range map[string][]byte{
		"no newline":    good[:len(good)-1],
		"short key":     bytes.Replace(good, []byte("key "), []byte("key AAAA"), 1),
		"upper hex":     bytes.Replace(good, []byte("sha256 "+s.SHA256[:2]), []byte("sha256 AB"), 1),
		"size sign":     bytes.Replace(good, []byte("size "), []byte("size +"), 1),
		"missing lines": []byte(KeyFileHeader + "\n"),
		"other header":  bytes.Replace(good, []byte(KeyFileHeader), []byte("cloister-key-v1"), 1),
	} {
		if _, _, err := ParseKeyFile(data); !errors.Is(err, ErrKeyFile) {
			t.Errorf("%s: %v, want ErrKeyFile", name, err)
		}
	}
}

// TestVector opens a sealed file committed in testdata, so that a change to
// the format (or to age's) that would strand stored files fails here.
func TestVector(t *testing.T) {
	t.Parallel()
	// Parsed, not loaded: git does not keep the file's 0600 mode.
	kf, err := os.ReadFile("testdata/vector.key")
	if err != nil {
		t.Fatal(err)
	}
	k, s, err := ParseKeyFile(kf)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := os.ReadFile("testdata/vector.sealed")
	if err != nil {
		t.Fatal(err)
	}
	pt, err := openBytes(ct, k)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(pt)
	if hex.EncodeToString(sum[:]) != s.SHA256 || len(pt) != 70000 {
		t.Fatalf("vector opened to %d bytes with SHA-256 %x, want 70000 and %s", len(pt), sum, s.SHA256)
	}
	if d := sha256.Sum256(ct); "sha256:"+hex.EncodeToString(d[:]) != s.Digest {
		t.Fatalf("vector digest %x, key file says %s", d, s.Digest)
	}
}

func FuzzNewReader(f *testing.F) {
	ct, k, _ := sealBytes(f, pseudoRandom(chunk+10, 1))
	f.Add(ct)
	f.Add(ct[:100])
	f.Add([]byte("age-encryption.org/v1\n-> cloister-v1\n\n--- AAAA\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data), k)
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrWrongKey) {
				t.Fatalf("header error %v is neither ErrFormat nor ErrWrongKey", err)
			}
			return
		}
		if _, err := io.Copy(io.Discard, r); err != nil && !errors.Is(err, ErrTampered) {
			t.Fatalf("payload error %v is not ErrTampered", err)
		}
	})
}

func FuzzParseKeyFile(f *testing.F) {
	var k Key
	f.Add(MarshalKeyFile(&k, Summary{SHA256: hex.EncodeToString(make([]byte, 32)), Digest: "sha256:" + hex.EncodeToString(make([]byte, 32))}))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, s, err := ParseKeyFile(data)
		if err != nil {
			return
		}
		if again := MarshalKeyFile(k, s); !bytes.Equal(stripComments(again), stripComments(data)) {
			t.Fatalf("accepted a key file that does not marshal back:\n%q\n%q", data, again)
		}
	})
}

func stripComments(b []byte) []byte {
	var out []byte
	for _, l := range bytes.SplitAfter(b, []byte("\n")) {
		if !bytes.HasPrefix(l, []byte("#")) {
			out = append(out, l...)
		}
	}
	return out
}

var patternBlock = pseudoRandom(1<<20+7, 99)

// patternReader yields n bytes of a repeating pattern without holding them.
type patternReader struct{ n, off int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n-p.off)]
	n := 0
	for n < len(b) {
		n += copy(b[n:], patternBlock[(p.off+int64(n))%int64(len(patternBlock)):])
	}
	p.off += int64(n)
	return n, nil
}

// TestStreamsLargeFiles seals 128 MiB into a pipe that is opened at the
// same time, and checks that the heap never grew anywhere near the size:
// neither side holds the file.
func TestStreamsLargeFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("128 MiB through seal and open")
	}
	const size = 128 << 20
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	pr, pw := io.Pipe()
	sums := make(chan Summary, 1)
	keys := make(chan *Key, 1)
	go func() {
		// A buffer takes the header, so that the key can be handed over
		// before the pipe needs its reader.
		bw := bufio.NewWriterSize(pw, 64<<10)
		w, err := NewWriter(bw)
		if err != nil {
			pw.CloseWithError(err)
			keys <- nil
			return
		}
		keys <- w.Key()
		_, err = io.Copy(w, &patternReader{n: size})
		var s Summary
		if err == nil {
			s, err = w.Close()
		}
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
		sums <- s
	}()
	k := <-keys
	if k == nil {
		t.Fatal("NewWriter failed")
	}
	ptHash := sha256.New()
	_, n, err := Open(ptHash, pr, k, nil)
	if err != nil || n != size {
		t.Fatalf("open: %d bytes, %v", n, err)
	}
	s := <-sums
	want := sha256.New()
	io.Copy(want, &patternReader{n: size})
	if s.SHA256 != hex.EncodeToString(want.Sum(nil)) {
		t.Fatalf("summary %+v does not describe the plaintext", s)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapSys) - int64(before.HeapSys); grew > 32<<20 {
		t.Fatalf("sealing and opening %d MiB grew the heap by %d MiB", size>>20, grew>>20)
	}
}

// TestNoPlaintextHash: a Writer without the plaintext hash writes the
// same format (it opens, its digest and size describe it) and leaves the
// summary's SHA256 empty.
func TestNoPlaintextHash(t *testing.T) {
	t.Parallel()
	pt := pseudoRandom(3*chunk+5, 7)
	var ct bytes.Buffer
	w, err := NewWriter(&ct, NoPlaintextHash())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(pt); err != nil {
		t.Fatal(err)
	}
	s, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(ct.Bytes()); s.SHA256 != "" || s.Digest != "sha256:"+hex.EncodeToString(want[:]) || s.Size != int64(ct.Len()) {
		t.Fatalf("summary %+v for a %d-byte file with SHA-256 %x", s, ct.Len(), want)
	}
	want := sha256.Sum256(pt)
	if _, _, err := Open(io.Discard, bytes.NewReader(ct.Bytes()), w.Key(), &want); err != nil {
		t.Fatal(err)
	}
}
