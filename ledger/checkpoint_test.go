package ledger

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

func testValidatorSet(t testing.TB, n int) (*validatorSet, []ed25519.PrivateKey) {
	t.Helper()
	keys := make([]ed25519.PrivateKey, n)
	vks := make([]validatorKey, n)
	for i := range keys {
		keys[i] = newTestKey(t)
		vks[i] = validatorKey{pub: keys[i].Public().(ed25519.PublicKey), power: 1}
	}
	vs, err := newValidatorSet("test-chain", vks)
	if err != nil {
		t.Fatal(err)
	}
	return vs, keys
}

func sigsBy(c Checkpoint, keys []ed25519.PrivateKey) map[string][]byte {
	m := map[string][]byte{}
	for _, k := range keys {
		m[string(validatorAddress(k.Public().(ed25519.PublicKey)))] = ed25519.Sign(k, []byte(c.Text()))
	}
	return m
}

func TestCheckpointCosigning(t *testing.T) {
	vs, keys := testValidatorSet(t, 4)
	c := Checkpoint{Origin: vs.origin, Size: 42, Root: sha256.Sum256([]byte("root"))}

	signed, err := vs.assembleCheckpoint(c, sigsBy(c, keys[:3]))
	if err != nil {
		t.Fatal(err)
	}
	// The format of the contract, readable by x/mod/sumdb/note.
	wantText := "cloister.ledger/test-chain\n42\n" + base64.StdEncoding.EncodeToString(c.Root[:]) + "\n"
	if c.Text() != wantText || !strings.HasPrefix(string(signed), wantText+"\n— test-chain/validator-") {
		t.Fatalf("signed checkpoint:\n%s", signed)
	}
	for _, info := range vs.infos() {
		if !strings.HasPrefix(info.Key, info.Name+"+") || len(info.Address) != 40 || info.Name != "test-chain/validator-"+info.Address[:8] {
			t.Fatalf("validator info %+v", info)
		}
	}
	got, err := VerifyCheckpoint(signed, vs.origin, vs.infos())
	if err != nil || got != c {
		t.Fatalf("VerifyCheckpoint = %+v, %v", got, err)
	}
	n, err := note.Open(signed, vs.verifiers)
	if err != nil || len(n.Sigs) != 3 {
		t.Fatalf("note.Open: %v (%d sigs)", err, len(n.Sigs))
	}
	tx := encodeCheckpointTx(signed)
	if _, err := vs.parseCheckpointTx(tx, c); err != nil {
		t.Fatal(err)
	}

	// Two of four is not more than 2/3.
	if _, err := vs.assembleCheckpoint(c, sigsBy(c, keys[:2])); err == nil {
		t.Fatal("assembled a checkpoint with 2 of 4 signatures")
	}
	two := mustSignNote(t, vs, c, keys[:2])
	if _, err := VerifyCheckpoint(two, vs.origin, vs.infos()); err == nil || !strings.Contains(err.Error(), "2/3") {
		t.Fatalf("2 of 4 signatures: err = %v", err)
	}
	// A checkpoint for another tree is refused by the block check.
	other := c
	other.Size++
	if _, err := vs.parseCheckpointTx(tx, other); err == nil {
		t.Fatal("checkpoint for the wrong tree accepted")
	}
	// Signatures over another text are dropped when assembling.
	bad := sigsBy(other, keys)
	if _, err := vs.assembleCheckpoint(c, bad); err == nil {
		t.Fatal("assembled from signatures over another checkpoint")
	}
	// A signature by a key outside the set is refused.
	stranger := newTestKey(t)
	sk := noteSignerFor(t, "test-chain/validator-deadbeef", stranger)
	withStranger, err := note.Sign(&note.Note{Text: c.Text(), Sigs: mustOpen(t, signed, vs).Sigs}, sk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyCheckpoint(withStranger, vs.origin, vs.infos()); err == nil || !strings.Contains(err.Error(), "unknown key") {
		t.Fatalf("stranger's signature: err = %v", err)
	}
	// A tampered signature fails.
	tampered := bytes.Replace(signed, []byte("\n42\n"), []byte("\n43\n"), 1)
	if _, err := VerifyCheckpoint(tampered, vs.origin, vs.infos()); err == nil {
		t.Fatal("tampered checkpoint verified")
	}
	// Wrong origin.
	if _, err := VerifyCheckpoint(signed, "cloister.ledger/other", vs.infos()); err == nil {
		t.Fatal("checkpoint of another origin verified")
	}
}

func mustOpen(t *testing.T, msg []byte, vs *validatorSet) *note.Note {
	n, err := note.Open(msg, vs.verifiers)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustSignNote(t *testing.T, vs *validatorSet, c Checkpoint, keys []ed25519.PrivateKey) []byte {
	var signers []note.Signer
	for _, k := range keys {
		m := vs.byAddress(validatorAddress(k.Public().(ed25519.PublicKey)))
		signers = append(signers, presignedSigner{m.info.Name, m.keyHash, ed25519.Sign(k, []byte(c.Text()))})
	}
	b, err := note.Sign(&note.Note{Text: c.Text()}, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func noteSignerFor(t *testing.T, name string, k ed25519.PrivateKey) note.Signer {
	vk, err := note.NewEd25519VerifierKey(name, k.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vk)
	if err != nil {
		t.Fatal(err)
	}
	return presignedSigner{name, v.KeyHash(), nil}.withKey(k)
}

// keyedSigner signs for real; presignedSigner only replays.
type keyedSigner struct {
	presignedSigner
	k ed25519.PrivateKey
}

func (s presignedSigner) withKey(k ed25519.PrivateKey) note.Signer { return keyedSigner{s, k} }
func (s keyedSigner) Sign(msg []byte) ([]byte, error)              { return ed25519.Sign(s.k, msg), nil }

func TestParseCheckpoint(t *testing.T) {
	good := "cloister.ledger/x\n7\n" + strings.Repeat("A", 43) + "=\n"
	if c, err := ParseCheckpoint(good); err != nil || c.Size != 7 || c.Origin != "cloister.ledger/x" {
		t.Fatalf("ParseCheckpoint(good) = %+v, %v", c, err)
	}
	for _, bad := range []string{
		"", "o\n7\n", "o\n07\n" + strings.Repeat("A", 43) + "=\n", "o\n-1\n" + strings.Repeat("A", 43) + "=\n",
		"o\n7\n" + strings.Repeat("A", 42) + "==\n", "o\n7\n" + strings.Repeat("A", 43) + "=\next\n", "\n7\n" + strings.Repeat("A", 43) + "=\n",
	} {
		if _, err := ParseCheckpoint(bad); err == nil {
			t.Errorf("ParseCheckpoint(%q) accepted", bad)
		}
	}
}
