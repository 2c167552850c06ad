package verify

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// MaxCheckpointBytes bounds a signed checkpoint note: its text and up to
// MaxValidators signature lines, with room for witnesses' cosignatures.
const MaxCheckpointBytes = 64 << 10

// EmptyRoot is the RFC 6962 root of the empty log, SHA-256 of nothing.
var EmptyRoot = sha256.Sum256(nil)

// Checkpoint is a C2SP tlog-checkpoint: the ledger's origin, the log size
// and the RFC 6962 root of the first Size entries.
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   [32]byte

	// Set by OpenCheckpoint: the signed note as given, the validators
	// whose signatures verified, their power, the set's total power, and
	// the names on signatures by keys outside the set (ignored).
	Note        []byte
	Signers     []string
	SignedPower int64
	TotalPower  int64
	Unknown     []string
}

// Text is the checkpoint's note text: origin, decimal size, base64 root,
// one per line.
func (c *Checkpoint) Text() string {
	return c.Origin + "\n" + strconv.FormatUint(c.Size, 10) + "\n" + base64.StdEncoding.EncodeToString(c.Root[:]) + "\n"
}

// ParseCheckpoint reads a checkpoint's note text (without signatures):
// origin line, decimal size below 2^63 (tlog counts in int64), base64
// root, then optional extension lines, which are ignored. The empty log
// must have the empty root.
func ParseCheckpoint(text string) (*Checkpoint, error) {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if !strings.HasSuffix(text, "\n") || len(lines) < 3 {
		return nil, malformed("checkpoint: want origin, size and root lines, each ending in a newline")
	}
	origin, sizeText, rootText := lines[0], lines[1], lines[2]
	if origin == "" {
		return nil, malformed("checkpoint: empty origin line")
	}
	size, err := strconv.ParseUint(sizeText, 10, 63)
	if err != nil || strconv.FormatUint(size, 10) != sizeText {
		return nil, malformed("checkpoint: size line %.30q is not a decimal number below 2^63", sizeText)
	}
	root, err := base64.StdEncoding.Strict().DecodeString(rootText)
	if err != nil || len(root) != 32 {
		return nil, malformed("checkpoint: root line %.60q is not base64 of 32 bytes", rootText)
	}
	c := &Checkpoint{Origin: origin, Size: size}
	copy(c.Root[:], root)
	if size == 0 && c.Root != EmptyRoot {
		return nil, malformed("checkpoint: size 0 with root %s; the empty log's root is %s", rootText, b64(EmptyRoot[:]))
	}
	return c, nil
}

// Quorum reports whether signed is more than two thirds of total, without
// rounding: 3·signed > 2·total. Both are at most MaxTotalPower, so neither
// product overflows. It is the one quorum rule of checkpoints.
func Quorum(signed, total int64) bool { return 3*signed > 2*total }

// OpenCheckpoint verifies a signed checkpoint note against a validator set
// (checked with vs.Check first): the note must be well formed, its origin
// the set's, every signature by a member must verify (ErrBadCheckpointSignature
// otherwise) and the members that signed must hold more than two thirds of
// the voting power (ErrQuorum). A member's repeated signature counts once;
// signatures by keys outside the set are ignored and listed in Unknown.
func OpenCheckpoint(signed []byte, vs *ValidatorSet) (*Checkpoint, error) {
	if len(signed) > MaxCheckpointBytes {
		return nil, malformed("checkpoint: %d bytes, limit %d", len(signed), MaxCheckpointBytes)
	}
	verifiers, power, err := vs.verifiers()
	if err != nil {
		return nil, err
	}
	total := vs.TotalPower()
	n, err := note.Open(signed, verifiers)
	var invalid *note.InvalidSignatureError
	var unverified *note.UnverifiedNoteError
	switch {
	case errors.As(err, &invalid):
		c, perr := ParseCheckpointNote(signed)
		if perr != nil {
			return nil, perr
		}
		return nil, Errorf(ErrBadCheckpointSignature, "checkpoint at size %d: the signature of validator %s does not verify", c.Size, invalid.Name)
	case errors.As(err, &unverified):
		n = unverified.Note
	case err != nil:
		return nil, malformed("checkpoint is not a signed note (text, blank line, \"— name signature\" lines): %v", err)
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return nil, err
	}
	if c.Origin != vs.Origin {
		return nil, Errorf(ErrOrigin, "checkpoint origin %q is not the trusted ledger's origin %q", printable(c.Origin), vs.Origin)
	}
	c.Note = append([]byte(nil), signed...)
	c.TotalPower = total
	for _, s := range n.Sigs {
		c.Signers = append(c.Signers, s.Name)
		c.SignedPower += power[s.Name]
	}
	for _, s := range n.UnverifiedSigs {
		c.Unknown = append(c.Unknown, s.Name)
	}
	if !Quorum(c.SignedPower, total) {
		return nil, Errorf(ErrQuorum, "checkpoint at size %d is signed by validators holding power %d of %d (%s); more than 2/3 is needed",
			c.Size, c.SignedPower, total, strings.Join(c.Signers, ", "))
	}
	return c, nil
}

// ParseCheckpointNote parses a signed checkpoint note without judging its
// signatures: for showing what a server claims, never for trusting it
// (OpenCheckpoint does that).
func ParseCheckpointNote(signed []byte) (*Checkpoint, error) {
	if len(signed) > MaxCheckpointBytes {
		return nil, malformed("checkpoint: %d bytes, limit %d", len(signed), MaxCheckpointBytes)
	}
	_, err := note.Open(signed, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		return nil, malformed("checkpoint is not a signed note (text, blank line, \"— name signature\" lines)")
	}
	c, err := ParseCheckpoint(unverified.Note.Text)
	if err != nil {
		return nil, err
	}
	c.Note = append([]byte(nil), signed...)
	return c, nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// printable bounds a string from a server and replaces what a terminal
// could interpret.
func printable(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i >= 200 {
			b.WriteString("…")
			break
		}
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}
