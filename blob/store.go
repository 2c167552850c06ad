package blob

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/cloisterhq/cloister/blob/addr"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Errors callers tell apart with errors.Is.
var (
	// ErrNotFound: the store does not have the blob.
	ErrNotFound = errors.New("blob not found")
	// ErrMismatch: the bytes a store served do not hash to the digest.
	ErrMismatch = errors.New("blob content does not match its digest")
	// ErrTooLarge: the blob is larger than the caller's limit.
	ErrTooLarge = errors.New("blob larger than the limit")
	// ErrUnavailable: the store could not be reached or failed (network
	// error, 5xx, timeout).
	ErrUnavailable = errors.New("store unavailable")
	// ErrRefused: the store refused the request (authentication, quota,
	// a limit); the error says which.
	ErrRefused = errors.New("store refused the request")
	// ErrStoreURL: a store URL that is not http(s)://HOST[:PORT]/REPOSITORY.
	ErrStoreURL = addr.ErrStoreURL
)

// Options configures access to a store.
type Options struct {
	// Key, when set, signs every request (the Cloister store's push
	// authentication, docs/storage.md); other registries ignore it.
	Key ed25519.PrivateKey
	// HTTP is the client to use; nil means one with connect and header
	// timeouts.
	HTTP *http.Client
	// Now dates signatures; nil means time.Now.
	Now func() time.Time
}

// Store is one OCI repository: "http(s)://HOST[:PORT]/REPOSITORY".
type Store struct {
	url  string
	repo *remote.Repository
}

// defaultHTTP bounds each phase that a stalled store could stretch; the
// body itself is bounded by the caller's context.
var defaultHTTP = &http.Client{Transport: &http.Transport{
	Proxy:                 nil, // loopback stores and tests must not go through a proxy
	DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	TLSHandshakeTimeout:   10 * time.Second,
	ResponseHeaderTimeout: 30 * time.Second,
	MaxIdleConnsPerHost:   8,
	IdleConnTimeout:       90 * time.Second,
	ForceAttemptHTTP2:     true,
}}

// OpenStore parses a store URL. It does not connect.
func OpenStore(rawURL string, opts Options) (*Store, error) {
	u, err := addr.ParseStoreURL(rawURL)
	if err != nil {
		return nil, err
	}
	ref := registry.Reference{Registry: u.Host, Repository: u.Repository}
	if err := ref.ValidateRepository(); err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrStoreURL, truncate(rawURL), err)
	}
	repo := &remote.Repository{Reference: ref, PlainHTTP: u.Scheme == "http", SkipReferrersGC: true}
	hc := opts.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	if opts.Key != nil {
		now := opts.Now
		if now == nil {
			now = time.Now
		}
		repo.Client = &signingClient{hc: hc, key: opts.Key, now: now}
	} else {
		repo.Client = hc
	}
	return &Store{url: u.String(), repo: repo}, nil
}

// URL returns the store's URL in canonical form.
func (s *Store) URL() string { return s.url }

func (s *Store) String() string { return s.url }

// Exists reports whether the store has the blob.
func (s *Store) Exists(ctx context.Context, d Digest) (bool, error) {
	ok, err := s.repo.Blobs().Exists(ctx, ocispec.Descriptor{Digest: digest.Digest(d)})
	if err != nil {
		return false, s.wrap("checking", d, err)
	}
	return ok, nil
}

// PushBlob uploads size bytes from r as blob d, unless the store already
// has it. The store checks the digest; so does a Cloister store before it
// keeps anything.
func (s *Store) PushBlob(ctx context.Context, d Digest, size int64, r io.Reader) error {
	if ok, err := s.Exists(ctx, d); err == nil && ok {
		return nil
	}
	desc := ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.Digest(d), Size: size}
	if err := s.repo.Blobs().Push(ctx, desc, r); err != nil {
		if errors.Is(err, errdef.ErrAlreadyExists) {
			return nil
		}
		return s.wrap("pushing", d, err)
	}
	return nil
}

// Fetch opens blob d, refusing it before reading if the store says it is
// larger than max bytes (max <= 0: no limit). The caller must verify the
// bytes against d (Location.Fetch does) and close the reader.
func (s *Store) Fetch(ctx context.Context, d Digest, max int64) (io.ReadCloser, int64, error) {
	desc, rc, err := s.repo.Blobs().FetchReference(ctx, string(d))
	if err != nil {
		return nil, 0, s.wrap("fetching", d, err)
	}
	if max > 0 && desc.Size > max {
		rc.Close()
		return nil, 0, fmt.Errorf("%s: blob %s is %d bytes: %w of %d bytes", s.url, d, desc.Size, ErrTooLarge, max)
	}
	return rc, desc.Size, nil
}

// wrap classifies an error of the registry client.
func (s *Store) wrap(op string, d Digest, err error) error {
	var ec *errcode.ErrorResponse
	switch {
	case errors.Is(err, errdef.ErrNotFound):
		return fmt.Errorf("%s: %s %s: %w", s.url, op, d, ErrNotFound)
	case errors.As(err, &ec) && ec.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%s: %s %s: %w", s.url, op, d, ErrNotFound)
	case errors.As(err, &ec) && ec.StatusCode >= 500:
		return fmt.Errorf("%s: %s %s: %w: %v", s.url, op, d, ErrUnavailable, err)
	case errors.As(err, &ec):
		return fmt.Errorf("%s: %s %s: %w: %v", s.url, op, d, ErrRefused, err)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %s %s: %w", s.url, op, d, err)
	}
	return fmt.Errorf("%s: %s %s: %w: %v", s.url, op, d, ErrUnavailable, err)
}
