package verify

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// checkpointVector is testdata/checkpoint.json: three validators of power
// 1 with keys from fixed seeds, the set as the ledger publishes it, and a
// note they all signed.
type checkpointVector struct {
	Comment    string      `json:"comment"`
	ChainID    string      `json:"chain_id"`
	Seeds      []string    `json:"validator_seeds_hex"`
	Validators []Validator `json:"validators"`
	Size       uint64      `json:"size"`
	Root       []byte      `json:"root"`
	Note       string      `json:"note"`
}

func loadCheckpointVector(t *testing.T) (*checkpointVector, *ValidatorSet, []ed25519.PrivateKey) {
	t.Helper()
	b, err := os.ReadFile("testdata/checkpoint.json")
	if err != nil {
		t.Fatal(err)
	}
	var v checkpointVector
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	vs, err := NewValidatorSet(v.ChainID, v.Validators)
	if err != nil {
		t.Fatal(err)
	}
	var keys []ed25519.PrivateKey
	for _, s := range v.Seeds {
		keys = append(keys, ed25519.NewKeyFromSeed(unhex(t, s)))
	}
	for i, k := range keys {
		want, err := NewValidator(v.ChainID, k.Public().(ed25519.PublicKey), 1)
		if err != nil || want != v.Validators[i] {
			t.Fatalf("validator %d of the vector is not the one its seed makes: %+v", i, want)
		}
	}
	return &v, vs, keys
}

// signNote signs text with the given validators' keys, as they would.
func signNote(t *testing.T, text string, vs *ValidatorSet, keys []ed25519.PrivateKey, chainID string) []byte {
	t.Helper()
	var signers []note.Signer
	for _, k := range keys {
		v, err := NewValidator(chainID, k.Public().(ed25519.PublicKey), 1)
		if err != nil {
			t.Fatal(err)
		}
		nv, err := note.NewVerifier(v.Key)
		if err != nil {
			t.Fatal(err)
		}
		signers = append(signers, keySigner{v.Name, nv.KeyHash(), k})
	}
	b, err := note.Sign(&note.Note{Text: text}, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type keySigner struct {
	name string
	hash uint32
	k    ed25519.PrivateKey
}

func (s keySigner) Name() string                    { return s.name }
func (s keySigner) KeyHash() uint32                 { return s.hash }
func (s keySigner) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.k, msg), nil }

func TestCheckpointVector(t *testing.T) {
	t.Parallel()
	v, vs, keys := loadCheckpointVector(t)
	cp, err := OpenCheckpoint([]byte(v.Note), vs)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Origin != Origin(v.ChainID) || cp.Size != v.Size || !bytes.Equal(cp.Root[:], v.Root) || cp.SignedPower != 3 || cp.TotalPower != 3 {
		t.Fatalf("the vector opened as %+v", cp)
	}
	if got := signNote(t, cp.Text(), vs, keys, v.ChainID); string(got) != v.Note {
		t.Fatalf("signing the vector's text again gives another note:\n%s", got)
	}
	// Any two of the three signatures are 2 of 3, not more than 2/3.
	lines := strings.SplitAfter(v.Note, "\n")
	head, sigs := strings.Join(lines[:4], ""), lines[4:len(lines)-1]
	for drop := range sigs {
		two := head + strings.Join(append(append([]string{}, sigs[:drop]...), sigs[drop+1:]...), "")
		if _, err := OpenCheckpoint([]byte(two), vs); !errors.Is(err, ErrQuorum) {
			t.Errorf("two of three signatures: %v, want ErrQuorum", err)
		}
	}
}

// TestOpenCheckpointRules: the one checkpoint rule, case by case.
func TestOpenCheckpointRules(t *testing.T) {
	t.Parallel()
	v, vs, keys := loadCheckpointVector(t)
	text := (&Checkpoint{Origin: vs.Origin, Size: 7, Root: sha256.Sum256([]byte("seven"))}).Text()
	all := signNote(t, text, vs, keys, v.ChainID)

	// A witness (a key outside the set) cosigns: ignored, listed.
	witness := keySigner{"witness.example/w", 0, ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))}
	wk, _ := note.NewEd25519VerifierKey(witness.name, witness.k.Public().(ed25519.PublicKey))
	wv, _ := note.NewVerifier(wk)
	witness.hash = wv.KeyHash()
	n, err := note.Open(all, mustVerifiers(t, vs))
	if err != nil {
		t.Fatal(err)
	}
	witnessed, err := note.Sign(&note.Note{Text: text, Sigs: n.Sigs}, witness)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := OpenCheckpoint(witnessed, vs)
	if err != nil || len(cp.Unknown) != 1 || cp.Unknown[0] != witness.name || cp.SignedPower != 3 {
		t.Fatalf("a witnessed checkpoint: %+v, %v", cp, err)
	}
	// Only a witness signed: no quorum.
	if _, err := OpenCheckpoint(signNote2(t, text, witness), vs); !errors.Is(err, ErrQuorum) {
		t.Errorf("signed by a stranger only: %v, want ErrQuorum", err)
	}
	// A member's signature over another text: refused, not ignored.
	bad := bytes.Replace(all, []byte("\n7\n"), []byte("\n8\n"), 1)
	if _, err := OpenCheckpoint(bad, vs); !errors.Is(err, ErrBadCheckpointSignature) {
		t.Errorf("a tampered checkpoint: %v, want ErrBadCheckpointSignature", err)
	}
	// A member's signature repeated counts once.
	lines := strings.SplitAfter(string(all), "\n")
	twice := strings.Join(lines[:5], "") + lines[4] + lines[4]
	if _, err := OpenCheckpoint([]byte(twice), vs); !errors.Is(err, ErrQuorum) {
		t.Errorf("one signature three times: %v, want ErrQuorum", err)
	}
	// Another ledger's origin.
	other := signNote(t, strings.Replace(text, vs.Origin, "cloister.ledger/other", 1), vs, keys, v.ChainID)
	if _, err := OpenCheckpoint(other, vs); !errors.Is(err, ErrOrigin) {
		t.Errorf("another origin: %v, want ErrOrigin", err)
	}
	// Extension lines are allowed (C2SP) and ignored.
	if cp, err := OpenCheckpoint(signNote(t, text+"extension line\n", vs, keys, v.ChainID), vs); err != nil || cp.Size != 7 {
		t.Errorf("an extension line: %+v, %v", cp, err)
	}
	// Malformed bodies and notes.
	for name, doc := range map[string]string{
		"no signatures":      text,
		"size with zeros":    strings.Replace(text, "\n7\n", "\n07\n", 1),
		"size 2^63":          strings.Replace(text, "\n7\n", "\n9223372036854775808\n", 1),
		"empty log, a root":  strings.Replace(text, "\n7\n", "\n0\n", 1),
		"root of 31 bytes":   vs.Origin + "\n7\n" + b64(make([]byte, 31)) + "\n",
		"two lines":          vs.Origin + "\n7\n",
		"no final newline":   strings.TrimSuffix(text, "\n"),
		"control characters": vs.Origin + "\x01\n7\n" + b64(make([]byte, 32)) + "\n",
	} {
		var msg []byte
		if name == "no signatures" || name == "control characters" || name == "no final newline" {
			msg = []byte(doc)
		} else {
			msg = signNote(t, doc, vs, keys, v.ChainID)
		}
		if cp, err := OpenCheckpoint(msg, vs); !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrOrigin) {
			t.Errorf("%s: %+v, %v; want a malformed checkpoint", name, cp, err)
		}
	}
	if _, err := OpenCheckpoint(bytes.Repeat([]byte("x"), MaxCheckpointBytes+1), vs); !errors.Is(err, ErrMalformed) {
		t.Errorf("an oversized note: %v", err)
	}
}

func signNote2(t *testing.T, text string, s note.Signer) []byte {
	b, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustVerifiers(t *testing.T, vs *ValidatorSet) note.Verifiers {
	v, _, err := vs.verifiers()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestValidatorSetCheck: a set read from a server or a file is refused
// unless each part follows from the others.
func TestValidatorSetCheck(t *testing.T) {
	t.Parallel()
	v, vs, _ := loadCheckpointVector(t)
	mutate := func(f func(*ValidatorSet)) error {
		c := *vs
		c.Validators = append([]Validator(nil), vs.Validators...)
		f(&c)
		return c.Check()
	}
	for name, f := range map[string]func(*ValidatorSet){
		"origin of another chain": func(s *ValidatorSet) { s.Origin = Origin("other") },
		"chain id with a space":   func(s *ValidatorSet) { s.ChainID, s.Origin = "a b", Origin("a b") },
		"no validators":           func(s *ValidatorSet) { s.Validators = nil },
		"a duplicate":             func(s *ValidatorSet) { s.Validators = append(s.Validators, s.Validators[0]) },
		"power 0":                 func(s *ValidatorSet) { s.Validators[0].Power = 0 },
		"address of another key":  func(s *ValidatorSet) { s.Validators[0].Address = s.Validators[1].Address },
		"key of another name":     func(s *ValidatorSet) { s.Validators[0].Key = s.Validators[1].Key },
		"address not hex":         func(s *ValidatorSet) { s.Validators[0].Address = "z" + s.Validators[0].Address[1:] },
		"total power overflows": func(s *ValidatorSet) {
			s.Validators[0].Power, s.Validators[1].Power = MaxTotalPower, MaxTotalPower
		},
	} {
		if err := mutate(f); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := vs.Check(); err != nil || !vs.Equal(vs) || v.ChainID == "" {
		t.Fatal(err)
	}
}

func TestQuorum(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		signed, total int64
		want          bool
	}{{3, 3, true}, {2, 3, false}, {3, 4, true}, {2, 4, false}, {7, 10, true}, {6, 9, false}, {0, 1, false},
		{MaxTotalPower, MaxTotalPower, true}, {MaxTotalPower / 3 * 2, MaxTotalPower, false}, {MaxTotalPower/3*2 + 1, MaxTotalPower, true}} {
		if got := Quorum(c.signed, c.total); got != c.want {
			t.Errorf("Quorum(%d, %d) = %v", c.signed, c.total, got)
		}
	}
}
