package blob

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Location is where a blob may be found: any copy will do, each checked by
// digest. Stores are tried in order.
type Location []*Store

// OpenLocation parses store URLs into a Location.
func OpenLocation(urls []string, opts Options) (Location, error) {
	if len(urls) == 0 {
		return nil, fmt.Errorf("%w: no store given", ErrStoreURL)
	}
	var l Location
	for _, u := range urls {
		s, err := OpenStore(u, opts)
		if err != nil {
			return nil, err
		}
		l = append(l, s)
	}
	return l, nil
}

// Sink receives a blob being fetched: the bytes are written, then either
// Commit (they matched the digest) or Abort (they did not, or the store
// failed midway) is called. An atomicfile.File is a Sink.
type Sink interface {
	io.Writer
	Commit() error
	Abort()
}

// Attempt is what one store did for one fetch.
type Attempt struct {
	Store string
	Err   error // nil: this store served the blob
}

// FetchError lists each store's failure when no store served a blob. It
// matches ErrNotFound when every store said it does not have the blob, and
// ErrMismatch when any store served wrong bytes.
type FetchError struct {
	Digest   Digest
	Attempts []Attempt
}

func (e *FetchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "blob %s: no store served it", e.Digest)
	for _, a := range e.Attempts {
		fmt.Fprintf(&b, "; %v", a.Err)
	}
	return b.String()
}

// Is reports ErrNotFound if every store said so; ErrMismatch, ErrTooLarge
// and ErrUnavailable if any store's attempt ended that way.
func (e *FetchError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		for _, a := range e.Attempts {
			if !errors.Is(a.Err, ErrNotFound) {
				return false
			}
		}
		return len(e.Attempts) > 0
	case ErrMismatch, ErrTooLarge, ErrUnavailable:
		for _, a := range e.Attempts {
			if errors.Is(a.Err, target) {
				return true
			}
		}
	}
	return false
}

// Fetch copies blob d, at most max bytes (max <= 0: no limit), from the
// first store that serves bytes hashing to d, into a sink newSink makes
// for each attempt, told the size the store announced (so that the caller
// can make room before a byte arrives; the copy never exceeds it). An
// error making or committing a sink ends the fetch with that error. It
// commits the sink only for a matching copy and
// returns the store that served it and its size; a store that fails,
// lacks the blob or serves other bytes is skipped. The error is a
// *FetchError naming what each store did.
func (l Location) Fetch(ctx context.Context, d Digest, max int64, newSink func(size int64) (Sink, error)) (*Store, int64, error) {
	if _, err := ParseDigest(string(d)); err != nil {
		return nil, 0, err
	}
	fe := &FetchError{Digest: d}
	for _, s := range l {
		if err := ctx.Err(); err != nil {
			fe.Attempts = append(fe.Attempts, Attempt{Store: s.url, Err: err})
			break
		}
		n, err := fetchOne(ctx, s, d, max, newSink)
		if err == nil {
			return s, n, nil
		}
		var le *localError
		if errors.As(err, &le) {
			// The sink, not the store, failed: another store would not
			// do better.
			return nil, 0, le.err
		}
		fe.Attempts = append(fe.Attempts, Attempt{Store: s.url, Err: err})
	}
	return nil, 0, fe
}

func fetchOne(ctx context.Context, s *Store, d Digest, max int64, newSink func(size int64) (Sink, error)) (int64, error) {
	rc, size, err := s.Fetch(ctx, d, max)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	sink, err := newSink(size)
	if err != nil {
		return 0, &localError{err}
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(sink, h), io.LimitReader(rc, size))
	if err != nil {
		sink.Abort()
		return 0, fmt.Errorf("%s: reading %s: %w: %v", s.url, d, ErrUnavailable, err)
	}
	// A byte past the announced size tells a store that sends more than
	// it said (oras already refuses a Content-Length other than the size);
	// the sink never gets it.
	if k, _ := io.ReadFull(rc, make([]byte, 1)); k > 0 {
		n++
	}
	var got [32]byte
	copy(got[:], h.Sum(nil))
	if n != size || got != d.Sum() {
		sink.Abort()
		return 0, fmt.Errorf("%s: served %d bytes hashing to %s for %s: %w", s.url, n, FromSum(got), d, ErrMismatch)
	}
	if err := sink.Commit(); err != nil {
		return 0, &localError{fmt.Errorf("keeping %s: %w", d, err)}
	}
	return n, nil
}

// localError is a failure of the caller's sink, which ends a fetch.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }

// memSink keeps a small blob in memory.
type memSink struct {
	buf  []byte
	done *[]byte
}

func (m *memSink) Write(p []byte) (int, error) { m.buf = append(m.buf, p...); return len(p), nil }
func (m *memSink) Commit() error               { *m.done = m.buf; return nil }
func (m *memSink) Abort()                      { m.buf = nil }

// FetchBytes fetches a small blob (at most max bytes, which must be set)
// into memory.
func (l Location) FetchBytes(ctx context.Context, d Digest, max int64) ([]byte, *Store, error) {
	if max <= 0 {
		return nil, nil, errors.New("blob: FetchBytes needs a limit")
	}
	var out []byte
	s, _, err := l.Fetch(ctx, d, max, func(int64) (Sink, error) { return &memSink{done: &out}, nil })
	if err != nil {
		return nil, nil, err
	}
	if out == nil {
		out = []byte{}
	}
	return out, s, nil
}
