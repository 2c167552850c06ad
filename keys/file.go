package keys

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/seal"
)

// FileHeader is the first non-comment line of a key file.
const FileHeader = "cloister-key-v1"

// MaxFileSize bounds what Load reads; a real key file is under 2 KiB.
const MaxFileSize = 16 << 10

// ErrPermissions marks a key file that users other than its owner can
// read or write.
var ErrPermissions = errors.New("keys: key file permissions too open")

// Marshal returns the key file contents (docs/keys.md "Key files"): comment
// lines with the public halves, the header line, then one line per private
// key.
func (k *PrivateKey) Marshal() ([]byte, error) {
	hk, err := seal.MarshalPrivateKey(k.sealing)
	if err != nil {
		return nil, err
	}
	pub := k.Public()
	var b bytes.Buffer
	b.WriteString("# cloister key file: keep it secret. Public halves, for policies:\n")
	fmt.Fprintf(&b, "# signing_key: %s\n", pub.SigningString())
	fmt.Fprintf(&b, "# sealing_key: %s\n", pub.SealingString())
	b.WriteString(FileHeader + "\n")
	fmt.Fprintf(&b, "ed25519 %s\n", base64.StdEncoding.EncodeToString(k.signing.Seed()))
	fmt.Fprintf(&b, "hpke %s\n", base64.StdEncoding.EncodeToString(hk))
	return b.Bytes(), nil
}

// Parse reads key file contents. Lines starting with '#' are comments and
// are ignored (the public halves written there are informative only: the
// public keys are always recomputed from the private ones). Everything else
// must be exactly the header line, the "ed25519" line and the "hpke" line,
// in that order, each ending in a newline.
func Parse(data []byte) (*PrivateKey, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%w: %d bytes, a key file is at most %d", ErrFormat, len(data), MaxFileSize)
	}
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return nil, fmt.Errorf("%w: key file must end with a newline", ErrFormat)
	}
	var lines []string
	for i, line := range strings.Split(string(data[:len(data)-1]), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if strings.ContainsAny(line, "\r\t") || strings.TrimSpace(line) != line {
			return nil, fmt.Errorf("%w: line %d has stray whitespace", ErrFormat, i+1)
		}
		lines = append(lines, line)
	}
	if len(lines) == 0 || lines[0] != FileHeader {
		return nil, fmt.Errorf("%w: not a cloister key file (first non-comment line must be %q)", ErrFormat, FileHeader)
	}
	if len(lines) != 3 {
		return nil, fmt.Errorf("%w: expected the header, an \"ed25519\" line and an \"hpke\" line, found %d non-comment lines", ErrFormat, len(lines))
	}
	edSeed, err := keyLine(lines[1], "ed25519")
	if err != nil {
		return nil, err
	}
	if len(edSeed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: ed25519 seed is %d bytes, expected %d", ErrFormat, len(edSeed), ed25519.SeedSize)
	}
	hk, err := keyLine(lines[2], "hpke")
	if err != nil {
		return nil, err
	}
	sealing, err := seal.ParsePrivateKey(hk)
	if err != nil {
		return nil, fmt.Errorf("%w: hpke line: %w", ErrFormat, err)
	}
	return &PrivateKey{signing: ed25519.NewKeyFromSeed(edSeed), sealing: sealing}, nil
}

func keyLine(line, label string) ([]byte, error) {
	rest, ok := strings.CutPrefix(line, label+" ")
	if !ok {
		return nil, fmt.Errorf("%w: expected a line %q, got %q", ErrFormat, label+" <base64>", truncate(line))
	}
	b, err := base64.StdEncoding.Strict().DecodeString(rest)
	if err != nil || base64.StdEncoding.EncodeToString(b) != rest {
		return nil, fmt.Errorf("%w: %s line is not canonical standard base64", ErrFormat, label)
	}
	return b, nil
}

func truncate(s string) string {
	if len(s) > 24 {
		return s[:24] + "…"
	}
	return s
}

// Load reads a key file. It refuses files that are not regular files and
// files whose mode lets group or others read or write them (ErrPermissions:
// run chmod 600), because a key others can read is no longer a principal's
// own. Errors name the file and what is wrong with it.
func Load(path string) (*PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("key file %s: %w: not a regular file (%s)", path, ErrFormat, fi.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	// The contents are judged first: a file that is no key file at all
	// (a public key, say) is told so, not to chmod 600 first.
	k, err := Parse(data)
	if err != nil {
		if publicOnly(data) {
			return nil, fmt.Errorf("key file %s: %w: it holds public keys only; give the private key file made by 'cloister key new' (%s looks like the output of 'cloister key public' or of --pub-out)", path, ErrFormat, path)
		}
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("key file %s: %w: mode %04o lets other users access it; run: chmod 600 %s", path, ErrPermissions, perm, path)
	}
	return k, nil
}

// publicOnly reports whether data looks like public keys: what 'cloister
// key public' prints (with or without --json), an "ed25519:" line, or a
// PEM public key.
func publicOnly(data []byte) bool {
	s := strings.TrimSpace(string(data))
	if strings.Contains(s, FileHeader) {
		return false
	}
	return strings.Contains(s, "signing_key") || strings.HasPrefix(s, protocol.Ed25519KeyPrefix) ||
		strings.HasPrefix(s, "-----BEGIN PUBLIC KEY-----")
}

// Save writes the key file at path with mode 0600, durably. It never
// overwrites an existing file (the error wraps fs.ErrExist), not even one
// that appears while it writes, and never leaves a partial file at path
// (internal/atomicfile with NoReplace).
func (k *PrivateKey) Save(path string) error {
	data, err := k.Marshal()
	if err != nil {
		return fmt.Errorf("key file %s: %w", path, err)
	}
	if err := atomicfile.WriteFile(path, data, 0o600, atomicfile.NoReplace()); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("key file %s: %w: refusing to overwrite an existing key", path, fs.ErrExist)
		}
		return fmt.Errorf("key file %s: %w", path, errors.Unwrap(err))
	}
	return nil
}

// LoadOrCreate loads the key file at path, or, if there is none, generates
// a key pair and saves it there. A node uses it for its platform key
// (DIR/platform.key) on first start. created reports whether a new key was
// written. If another process creates the file at the same moment, its key
// is loaded and returned.
func LoadOrCreate(path string) (k *PrivateKey, created bool, err error) {
	k, err = Load(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	k, err = Generate()
	if err != nil {
		return nil, false, err
	}
	if err := k.Save(path); err != nil {
		if errors.Is(err, os.ErrExist) {
			k, err = Load(path)
			return k, false, err
		}
		return nil, false, err
	}
	return k, true, nil
}
