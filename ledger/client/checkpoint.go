package client

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// Checkpoint is a C2SP tlog-checkpoint: the ledger's origin, the log size
// and the RFC 6962 root of the first Size entries, as a signed note.
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   [32]byte
	// Note is the full signed note text as served.
	Note []byte

	// Set by VerifyCheckpoint: the pinned validators whose signatures
	// verified, their power and the set's total power.
	Signers     []string
	SignedPower int64
	TotalPower  int64
}

// ParseCheckpoint parses a signed checkpoint note without checking any
// signature: origin line, decimal size, base64 root, optional extension
// lines (ignored), a blank line and signature lines.
func ParseCheckpoint(text []byte) (*Checkpoint, error) {
	if len(text) > maxCheckpointText {
		return nil, malformed("checkpoint: %d bytes, limit %d", len(text), maxCheckpointText)
	}
	// With no known verifiers, Open checks the note's syntax and returns
	// it inside an UnverifiedNoteError.
	_, err := note.Open(text, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		return nil, malformed("checkpoint is not a signed note (text, blank line, \"— name signature\" lines)")
	}
	c, err := parseCheckpointBody(unverified.Note.Text)
	if err != nil {
		return nil, err
	}
	c.Note = append([]byte(nil), text...)
	return c, nil
}

func parseCheckpointBody(body string) (*Checkpoint, error) {
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	if len(lines) < 3 {
		return nil, malformed("checkpoint: want origin, size and root lines, got %d lines", len(lines))
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
	if size == 0 && c.Root != emptyRoot {
		return nil, malformed("checkpoint: size 0 with root %s; the empty tree's root is %s", rootText, b64(emptyRoot[:]))
	}
	return c, nil
}

// VerifyCheckpoint parses a signed checkpoint and accepts it only if its
// origin is the set's origin and validators of vs holding strictly more
// than 2/3 of the total voting power signed it. Signatures by keys outside
// the set are ignored; a signature by a key of the set that does not verify
// fails the whole checkpoint (an honest ledger never serves one).
func VerifyCheckpoint(text []byte, vs *ValidatorSet) (*Checkpoint, error) {
	c, err := ParseCheckpoint(text)
	if err != nil {
		return nil, err
	}
	if c.Origin != vs.Origin {
		return nil, verr(ErrOrigin, "checkpoint origin %q is not the trusted ledger's origin %q", sanitize(c.Origin), vs.Origin)
	}
	verifiers := make([]note.Verifier, 0, len(vs.Validators))
	power := map[string]int64{}
	for _, v := range vs.Validators {
		nv, err := note.NewVerifier(v.Key)
		if err != nil {
			return nil, fmt.Errorf("validator %s: %w", v.Name, err)
		}
		verifiers = append(verifiers, nv)
		power[v.Name] = v.Power
	}
	c.TotalPower = vs.TotalPower()
	n, err := note.Open(text, note.VerifierList(verifiers...))
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(err, &invalid):
		return nil, verr(ErrBadCheckpointSignature, "checkpoint at size %d: the signature of validator %s does not verify", c.Size, invalid.Name)
	case errors.As(err, new(*note.UnverifiedNoteError)):
		return nil, verr(ErrQuorum, "checkpoint at size %d is signed by none of the %d pinned validators (power 0 of %d; more than 2/3 needed)", c.Size, len(vs.Validators), c.TotalPower)
	case err != nil:
		return nil, malformed("checkpoint: %v", err)
	}
	for _, s := range n.Sigs {
		c.Signers = append(c.Signers, s.Name)
		c.SignedPower += power[s.Name]
	}
	if !quorum(c.SignedPower, c.TotalPower) {
		return nil, verr(ErrQuorum, "checkpoint at size %d is signed by validators holding power %d of %d (%s); more than 2/3 is needed",
			c.Size, c.SignedPower, c.TotalPower, strings.Join(c.Signers, ", "))
	}
	return c, nil
}

// quorum reports signed > 2/3 total without rounding: 3*signed > 2*total.
// Both are at most maxTotalPower, so neither product overflows.
func quorum(signed, total int64) bool { return 3*signed > 2*total }
