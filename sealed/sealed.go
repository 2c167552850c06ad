package sealed

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"filippo.io/age"
)

// KeySize is the size of a content key: age's file key.
const KeySize = 16

// StanzaType is the type of the one recipient stanza of a sealed file's
// header, which says that the file key is held out of band.
const StanzaType = "cloister-v1"

// Key is a content key. It opens exactly one sealed file; never reuse it.
type Key [KeySize]byte

// Errors callers tell apart with errors.Is.
var (
	// ErrFormat: the input is not a Cloister sealed file (not age, or an
	// age file with other recipients).
	ErrFormat = errors.New("sealed: not a cloister sealed file")
	// ErrWrongKey: the key is not the one the file was sealed under (or
	// the header was modified).
	ErrWrongKey = errors.New("sealed: wrong content key for this file, or its header was modified")
	// ErrTampered: the ciphertext was modified, truncated, extended or
	// reordered. Plaintext read before the error came from chunks that
	// did authenticate, but the file as a whole must be discarded.
	ErrTampered = errors.New("sealed: ciphertext modified, truncated or reordered")
	// ErrPlaintextHash: the plaintext opened but its SHA-256 is not the
	// one expected.
	ErrPlaintextHash = errors.New("sealed: plaintext SHA-256 does not match")
)

// Summary describes one sealed file: what policies pin and what stores
// address. It is the JSON `cloister program seal --json` prints.
type Summary struct {
	// SHA256 is the SHA-256 of the plaintext, lowercase hex.
	SHA256 string `json:"sha256"`
	// Digest is the OCI digest of the ciphertext, "sha256:<hex>".
	Digest string `json:"digest"`
	// Size is the ciphertext size in bytes (the blob's size in a store).
	Size int64 `json:"size"`
}

// recipient hands age's file key out instead of wrapping it.
type recipient struct{ key *Key }

func (r recipient) Wrap(fileKey []byte) ([]*age.Stanza, error) {
	if len(fileKey) != KeySize {
		return nil, fmt.Errorf("sealed: age file key is %d bytes, want %d", len(fileKey), KeySize)
	}
	copy(r.key[:], fileKey)
	return []*age.Stanza{{Type: StanzaType, Args: []string{}, Body: []byte{}}}, nil
}

// identity returns the out-of-band key for a header with exactly the one
// Cloister stanza.
type identity struct{ key *Key }

func (id identity) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	if len(stanzas) != 1 || stanzas[0].Type != StanzaType || len(stanzas[0].Args) != 0 || len(stanzas[0].Body) != 0 {
		types := make([]string, len(stanzas))
		for i, s := range stanzas {
			types[i] = s.Type
		}
		return nil, fmt.Errorf("%w: header has recipient stanzas %q, want exactly one %q", ErrFormat, types, StanzaType)
	}
	k := *id.key
	return k[:], nil
}

// Writer seals what is written to it; Close finishes the file.
type Writer struct {
	key *Key
	ct  *countingHash
	pt  hash.Hash
	w   io.WriteCloser
}

// WriterOption changes what a Writer computes.
type WriterOption func(*Writer)

// NoPlaintextHash makes the Writer skip the SHA-256 of the plaintext (its
// Summary's SHA256 is then empty): for a caller that binds the file by
// its ciphertext's digest alone, as streamed uploads and outputs do, it
// saves a hash pass over every byte.
func NoPlaintextHash() WriterOption { return func(w *Writer) { w.pt = nil } }

// NewWriter starts a sealed file on dst under a fresh content key, which
// Key returns at once (so that a reader can be opened concurrently, say).
// The caller must Close the Writer for the last chunk to be written.
func NewWriter(dst io.Writer, opts ...WriterOption) (*Writer, error) {
	key := new(Key)
	ct := &countingHash{w: dst, h: sha256.New()}
	w, err := age.Encrypt(ct, recipient{key})
	if err != nil {
		return nil, fmt.Errorf("sealed: %w", err)
	}
	if *key == (Key{}) {
		return nil, errors.New("sealed: no content key was produced")
	}
	sw := &Writer{key: key, ct: ct, pt: sha256.New(), w: w}
	for _, o := range opts {
		o(sw)
	}
	return sw, nil
}

// Key returns the content key of the file being written.
func (w *Writer) Key() *Key { return w.key }

// Write seals p.
func (w *Writer) Write(p []byte) (int, error) {
	if w.pt != nil {
		w.pt.Write(p)
	}
	return w.w.Write(p)
}

// Close writes the last chunk and returns the file's summary.
func (w *Writer) Close() (Summary, error) {
	if err := w.w.Close(); err != nil {
		return Summary{}, fmt.Errorf("sealed: %w", err)
	}
	s := Summary{Digest: "sha256:" + hex.EncodeToString(w.ct.h.Sum(nil)), Size: w.ct.n}
	if w.pt != nil {
		s.SHA256 = hex.EncodeToString(w.pt.Sum(nil))
	}
	return s, nil
}

// Seal reads plaintext from src until EOF and writes the sealed file to
// dst under a fresh content key, which it returns with the file's summary.
// Memory use does not depend on the size of src.
func Seal(dst io.Writer, src io.Reader) (*Key, Summary, error) {
	w, err := NewWriter(dst)
	if err != nil {
		return nil, Summary{}, err
	}
	if _, err := io.Copy(w, src); err != nil {
		return nil, Summary{}, fmt.Errorf("sealed: %w", err)
	}
	s, err := w.Close()
	if err != nil {
		return nil, Summary{}, err
	}
	return w.key, s, nil
}

// NewReader returns a reader of the plaintext of the sealed file read from
// src. It checks the header (ErrFormat, ErrWrongKey) before returning; each
// Read authenticates whole chunks before returning any of their bytes, and
// reports ErrTampered for a chunk that does not authenticate or a file
// that ends early or has data after its last chunk.
func NewReader(src io.Reader, key *Key) (io.Reader, error) {
	es := &errSource{r: src}
	r, err := age.Decrypt(es, identity{key})
	if err != nil {
		if es.err != nil {
			return nil, fmt.Errorf("sealed: reading the header: %w", es.err)
		}
		return nil, classify(err)
	}
	return &tamperReader{r: r, src: es}, nil
}

// Open writes the plaintext of the sealed file read from src to dst and
// returns its SHA-256. If want is not nil, a different hash is ErrPlaintextHash.
// On any error, dst may hold a prefix of the plaintext: write to a
// temporary file and keep it only on success.
func Open(dst io.Writer, src io.Reader, key *Key, want *[32]byte) ([32]byte, int64, error) {
	var sum [32]byte
	r, err := NewReader(src, key)
	if err != nil {
		return sum, 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(dst, h), r)
	if err != nil {
		return sum, n, err
	}
	copy(sum[:], h.Sum(nil))
	if want != nil && sum != *want {
		return sum, n, fmt.Errorf("%w: got %x, want %x", ErrPlaintextHash, sum, *want)
	}
	return sum, n, nil
}

// classify maps age's header errors onto this package's.
func classify(err error) error {
	switch {
	case errors.Is(err, ErrFormat):
		return err
	case err.Error() == "bad header MAC":
		return ErrWrongKey
	}
	return fmt.Errorf("%w: %v", ErrFormat, err)
}

// errSource remembers the source's own read error, so that a failing disk
// or connection is not reported as tampering.
type errSource struct {
	r   io.Reader
	err error
}

func (e *errSource) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// tamperReader marks payload errors as tampering: age's stream reader fails
// only when a chunk does not authenticate or the stream is cut, unless the
// source itself failed.
type tamperReader struct {
	r   io.Reader
	src *errSource
}

func (t *tamperReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		if t.src.err != nil {
			return n, fmt.Errorf("sealed: reading the ciphertext: %w", t.src.err)
		}
		return n, fmt.Errorf("%w: %v", ErrTampered, err)
	}
	return n, err
}

type countingHash struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}
