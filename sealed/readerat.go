package sealed

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"filippo.io/age"
)

// NewReaderAt returns a reader of the plaintext of the sealed file in src
// (size bytes of ciphertext) at any offset, and the plaintext's size. It
// checks the header (ErrFormat, ErrWrongKey) and authenticates the last
// chunk — which fixes the size: a truncated or extended file is
// ErrTampered here — before returning; each ReadAt then authenticates
// every chunk it reads before returning any of its bytes (ErrTampered for
// one that does not). It keeps one decrypted chunk; ReadAt may be called
// concurrently. This is how a program reads a sealed input in place,
// without the plaintext ever being whole anywhere.
func NewReaderAt(src io.ReaderAt, size int64, key *Key) (io.ReaderAt, int64, error) {
	es := &errSourceAt{r: src}
	r, n, err := age.DecryptReaderAt(es, size, identity{key})
	if err != nil {
		if e := es.failed(); e != nil {
			return nil, 0, fmt.Errorf("sealed: reading the ciphertext: %w", e)
		}
		var ni *age.NoIdentityMatchError
		if errors.As(err, &ni) || errors.Is(err, ErrFormat) || err.Error() == "bad header MAC" {
			return nil, 0, classify(err)
		}
		// The header parsed and authenticated; the last chunk did not.
		if _, herr := age.ExtractHeader(io.NewSectionReader(src, 0, size)); herr == nil {
			return nil, 0, fmt.Errorf("%w: %v", ErrTampered, err)
		}
		return nil, 0, classify(err)
	}
	return &tamperReaderAt{r: r, src: es}, n, nil
}

// errSourceAt remembers the source's own read errors (a failing disk is not
// tampering).
type errSourceAt struct {
	r   io.ReaderAt
	err error
}

func (e *errSourceAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := e.r.ReadAt(p, off)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

func (e *errSourceAt) failed() error { return e.err }

type tamperReaderAt struct {
	r   io.ReaderAt
	src *errSourceAt
}

func (t *tamperReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := t.r.ReadAt(p, off)
	if err != nil && err != io.EOF {
		if e := t.src.failed(); e != nil {
			return n, fmt.Errorf("sealed: reading the ciphertext: %w", e)
		}
		return n, fmt.Errorf("%w: %v", ErrTampered, err)
	}
	return n, err
}

// chunkSize is age's STREAM chunk; each sealed chunk adds a 16-byte tag.
const chunkSize = 64 << 10

// headerSize is the size of a sealed file's header and nonce: the same for
// every sealed file (one stanza with no arguments and no body).
var headerSize = sync.OnceValue(func() int64 {
	var b bytes.Buffer
	if _, _, err := Seal(&b, bytes.NewReader(nil)); err != nil {
		panic("sealed: sealing nothing: " + err.Error())
	}
	return int64(b.Len()) - 16 // one empty chunk's tag
})

// CiphertextSize is the size of the sealed file of a plaintext of n bytes,
// known before sealing (a streamed upload declares it first).
func CiphertextSize(n int64) int64 {
	chunks := max(1, (n+chunkSize-1)/chunkSize)
	return headerSize() + n + 16*chunks
}
