package sealed

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/cloisterhq/cloister/internal/atomicfile"
)

// KeyFileHeader is the first non-comment line of a content key file.
const KeyFileHeader = "cloister-content-key-v1"

// maxKeyFile bounds what LoadKeyFile reads; a real one is under 400 bytes.
const maxKeyFile = 4 << 10

// ErrKeyFile marks a content key file that is malformed or readable by
// other users.
var ErrKeyFile = errors.New("sealed: bad content key file")

// MarshalKeyFile returns the content key file for key and the file it
// seals: a comment, the header line, then "key", "sha256", "digest" and
// "size" lines in that order (docs/storage.md).
func MarshalKeyFile(key *Key, s Summary) []byte {
	var b bytes.Buffer
	b.WriteString("# cloister content key: keep it secret. Whoever holds it can read the sealed file.\n")
	b.WriteString(KeyFileHeader + "\n")
	fmt.Fprintf(&b, "key %s\n", base64.StdEncoding.EncodeToString(key[:]))
	fmt.Fprintf(&b, "sha256 %s\n", s.SHA256)
	fmt.Fprintf(&b, "digest %s\n", s.Digest)
	fmt.Fprintf(&b, "size %d\n", s.Size)
	return b.Bytes()
}

// ParseKeyFile reads content key file contents.
func ParseKeyFile(data []byte) (*Key, Summary, error) {
	bad := func(format string, args ...any) (*Key, Summary, error) {
		return nil, Summary{}, fmt.Errorf("%w: %s", ErrKeyFile, fmt.Sprintf(format, args...))
	}
	if len(data) > maxKeyFile {
		return bad("%d bytes, at most %d", len(data), maxKeyFile)
	}
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return bad("must end with a newline")
	}
	var lines []string
	for _, l := range strings.Split(string(data[:len(data)-1]), "\n") {
		if !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	want := []string{"", "key", "sha256", "digest", "size"}
	if len(lines) != len(want) || lines[0] != KeyFileHeader {
		return bad("want the line %q then key, sha256, digest and size lines", KeyFileHeader)
	}
	vals := map[string]string{}
	for i, label := range want[1:] {
		v, ok := strings.CutPrefix(lines[i+1], label+" ")
		if !ok || v == "" || strings.TrimSpace(v) != v {
			return bad("line %d: want %q", i+2, label+" VALUE")
		}
		vals[label] = v
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(vals["key"])
	if err != nil || len(raw) != KeySize || base64.StdEncoding.EncodeToString(raw) != vals["key"] {
		return bad("key: want %d bytes in canonical standard base64", KeySize)
	}
	s := Summary{SHA256: vals["sha256"], Digest: vals["digest"]}
	if !isHex64(s.SHA256) {
		return bad("sha256: want 64 lowercase hex digits")
	}
	if h, ok := strings.CutPrefix(s.Digest, "sha256:"); !ok || !isHex64(h) {
		return bad("digest: want sha256: and 64 lowercase hex digits")
	}
	if s.Size, err = strconv.ParseInt(vals["size"], 10, 64); err != nil || s.Size < 0 || strconv.FormatInt(s.Size, 10) != vals["size"] {
		return bad("size: want a decimal byte count")
	}
	k := new(Key)
	copy(k[:], raw)
	return k, s, nil
}

// SaveKeyFile writes the content key file at path with mode 0600, whole
// or not at all; it never replaces an existing file (os.ErrExist).
func SaveKeyFile(path string, key *Key, s Summary) error {
	if err := atomicfile.WriteFile(path, MarshalKeyFile(key, s), 0o600, atomicfile.NoReplace()); err != nil {
		return fmt.Errorf("content key file %s: %w", path, err)
	}
	return nil
}

// LoadKeyFile reads a content key file, refusing one that group or others
// may read or write.
func LoadKeyFile(path string) (*Key, Summary, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Summary{}, fmt.Errorf("content key file %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, Summary{}, fmt.Errorf("content key file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, Summary{}, fmt.Errorf("content key file %s: %w: not a regular file", path, ErrKeyFile)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, Summary{}, fmt.Errorf("content key file %s: %w: mode %04o lets other users access it; run: chmod 600 %s", path, ErrKeyFile, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, Summary{}, fmt.Errorf("content key file %s: %w", path, err)
	}
	k, s, err := ParseKeyFile(data)
	if err != nil {
		return nil, Summary{}, fmt.Errorf("content key file %s: %w", path, err)
	}
	return k, s, nil
}

func isHex64(s string) bool {
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
