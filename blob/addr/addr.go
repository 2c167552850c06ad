// Package addr parses the two names of content-addressed storage — a blob
// digest ("sha256:<hex>") and a store URL ("http(s)://HOST[:PORT]/REPO") —
// with no dependency beyond the standard library, so that packages that
// only validate them (policy) need not import a registry client.
package addr

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

var (
	// ErrDigest marks a string that is not a sha256 digest.
	ErrDigest = errors.New("not a sha256 digest")
	// ErrStoreURL marks a string that is not a store URL.
	ErrStoreURL = errors.New("bad store URL")
)

// ParseDigest checks that s is "sha256:" and 64 lowercase hex digits.
func ParseDigest(s string) error {
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || !IsLowerHex64(h) {
		return fmt.Errorf("%w: %q (want sha256: and 64 lowercase hex digits)", ErrDigest, Truncate(s))
	}
	return nil
}

// IsLowerHex64 reports whether s is 64 lowercase hex digits.
func IsLowerHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// repoRE is the distribution-spec repository name grammar.
var repoRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)

// ValidRepository reports whether name is an OCI repository name.
func ValidRepository(name string) bool { return len(name) <= 255 && repoRE.MatchString(name) }

// StoreURL is a parsed store URL.
type StoreURL struct {
	Scheme     string // http or https
	Host       string // host[:port]
	Repository string
}

// String returns the canonical form.
func (u StoreURL) String() string { return u.Scheme + "://" + u.Host + "/" + u.Repository }

// ParseStoreURL parses "http(s)://HOST[:PORT]/REPOSITORY".
func ParseStoreURL(raw string) (StoreURL, error) {
	bad := func(why string) (StoreURL, error) {
		return StoreURL{}, fmt.Errorf("%w %q: %s (want http(s)://HOST[:PORT]/REPOSITORY)", ErrStoreURL, Truncate(raw), why)
	}
	if len(raw) > 1024 {
		return bad("longer than 1024 bytes")
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return bad(err.Error())
	case u.Scheme != "http" && u.Scheme != "https":
		return bad("scheme must be http or https")
	case u.Host == "":
		return bad("no host")
	case u.User != nil:
		return bad("credentials do not go in the URL")
	case u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return bad("no query or fragment")
	}
	repo := strings.Trim(u.Path, "/")
	if repo == "" {
		return bad("no repository path")
	}
	if !ValidRepository(repo) {
		return bad(fmt.Sprintf("repository %q: lowercase letters and digits separated by . _ - or /", Truncate(repo)))
	}
	return StoreURL{Scheme: u.Scheme, Host: u.Host, Repository: repo}, nil
}

// Truncate shortens s for error messages.
func Truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
