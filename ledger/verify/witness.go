package verify

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// Witness cosignatures, in the shape of C2SP tlog-cosignature
// (cosignature/v1): a witness that checked a checkpoint consistent with
// every checkpoint it cosigned before adds a signature line to the note,
//
//	— <witness name> base64(key hash (4) ‖ be64(time) ‖ Ed25519 signature (64))
//
// over "cosignature/v1\ntime <time>\n" followed by the checkpoint text.
// The key hash is the first 4 bytes of SHA-256(name ‖ "\n" ‖ 0x04 ‖ key);
// the verifier key is "<name>+<hex key hash>+<base64(0x04 ‖ key)>". A
// checkpoint that validators signed and a witness cosigned was shown to
// the witness, and a split view (another checkpoint for another client)
// cannot get that witness's cosignature too.

// ErrWitness: the checkpoint lacks a valid cosignature of a required
// witness, or the witness refused it (a fork).
var ErrWitness = errors.New("checkpoint not cosigned by the required witness")

const (
	algCosignatureV1 = 0x04
	cosignPrefix     = "cosignature/v1\ntime "
)

// Witness is a witness's public identity.
type Witness struct {
	Name string
	Key  ed25519.PublicKey
}

func witnessKeyHash(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name + "\n"))
	h.Write([]byte{algCosignatureV1})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// VerifierKey is the witness's verifier key text.
func (w *Witness) VerifierKey() string {
	return fmt.Sprintf("%s+%08x+%s", w.Name, witnessKeyHash(w.Name, w.Key), base64.StdEncoding.EncodeToString(append([]byte{algCosignatureV1}, w.Key...)))
}

// ParseWitnessKey reads a witness verifier key.
func ParseWitnessKey(vkey string) (*Witness, error) {
	name, rest, ok1 := strings.Cut(vkey, "+")
	hashText, keyText, ok2 := strings.Cut(rest, "+")
	if !ok1 || !ok2 || name == "" || strings.ContainsAny(name, " \n+") {
		return nil, fmt.Errorf("witness key %.80q: want name+hash+key", vkey)
	}
	kb, err := base64.StdEncoding.Strict().DecodeString(keyText)
	if err != nil || len(kb) != 1+ed25519.PublicKeySize || kb[0] != algCosignatureV1 {
		return nil, fmt.Errorf("witness key %.80q: not a cosignature/v1 Ed25519 key", vkey)
	}
	w := &Witness{Name: name, Key: ed25519.PublicKey(kb[1:])}
	if h, err := strconv.ParseUint(hashText, 16, 32); err != nil || len(hashText) != 8 || uint32(h) != witnessKeyHash(name, w.Key) {
		return nil, fmt.Errorf("witness key %.80q: key hash does not match", vkey)
	}
	return w, nil
}

// cosignedMessage is what a witness signs for checkpoint text at time t.
func cosignedMessage(text []byte, t uint64) []byte {
	return append([]byte(cosignPrefix+strconv.FormatUint(t, 10)+"\n"), text...)
}

type witnessVerifier struct{ w *Witness }

func (v witnessVerifier) Name() string    { return v.w.Name }
func (v witnessVerifier) KeyHash() uint32 { return witnessKeyHash(v.w.Name, v.w.Key) }
func (v witnessVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	return Signature(v.w.Key, cosignedMessage(msg, binary.BigEndian.Uint64(sig[:8])), sig[8:])
}

type witnessSigner struct {
	w    *Witness
	priv ed25519.PrivateKey
	t    uint64
}

func (s witnessSigner) Name() string    { return s.w.Name }
func (s witnessSigner) KeyHash() uint32 { return witnessKeyHash(s.w.Name, s.w.Key) }
func (s witnessSigner) Sign(msg []byte) ([]byte, error) {
	return append(binary.BigEndian.AppendUint64(nil, s.t), ed25519.Sign(s.priv, cosignedMessage(msg, s.t))...), nil
}

// Cosign returns the cosignature line ("— name sig\n") of the witness
// named name with key priv over the checkpoint in signed (a signed note)
// at time now. The caller has checked the checkpoint.
func Cosign(signed []byte, name string, priv ed25519.PrivateKey, now time.Time) ([]byte, error) {
	c, err := ParseCheckpointNote(signed)
	if err != nil {
		return nil, err
	}
	w := &Witness{Name: name, Key: priv.Public().(ed25519.PublicKey)}
	n, err := note.Sign(&note.Note{Text: c.Text()}, witnessSigner{w, priv, uint64(now.Unix())})
	if err != nil {
		return nil, err
	}
	return n[len(c.Text())+1:], nil
}

// CheckCosignature reports whether the signed checkpoint carries a valid
// cosignature of w, and when the witness made it.
func CheckCosignature(signed []byte, w *Witness) (time.Time, error) {
	if len(signed) > MaxCheckpointBytes {
		return time.Time{}, malformed("checkpoint: %d bytes, limit %d", len(signed), MaxCheckpointBytes)
	}
	n, err := note.Open(signed, note.VerifierList(witnessVerifier{w}))
	if err != nil {
		return time.Time{}, Errorf(ErrWitness, "checkpoint has no valid cosignature of witness %s: %v", printable(w.Name), err)
	}
	for _, s := range n.Sigs {
		if s.Name == w.Name {
			raw, _ := base64.StdEncoding.DecodeString(s.Base64)
			if len(raw) >= 12 {
				return time.Unix(int64(binary.BigEndian.Uint64(raw[4:12])), 0).UTC(), nil
			}
		}
	}
	return time.Time{}, Errorf(ErrWitness, "checkpoint has no cosignature of witness %s", printable(w.Name))
}

// AddCosignature appends a cosignature line to a signed checkpoint.
func AddCosignature(signed, line []byte) []byte {
	out := bytes.Clone(signed)
	if !bytes.HasSuffix(out, []byte("\n")) {
		out = append(out, '\n')
	}
	return append(out, line...)
}
