package ledger

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/cloisterhq/cloister/ledger/verify"
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

func sigsBy(c logHead, keys []ed25519.PrivateKey) map[string][]byte {
	m := map[string][]byte{}
	for _, k := range keys {
		m[string(verify.ValidatorAddress(k.Public().(ed25519.PublicKey)))] = ed25519.Sign(k, []byte(c.Text()))
	}
	return m
}

// TestCheckpointCosigning: what the validators assemble from their vote
// extensions is what the one verifier trusts, and a block carries it
// exactly as assembled.
func TestCheckpointCosigning(t *testing.T) {
	t.Parallel()
	vs, keys := testValidatorSet(t, 4)
	c := logHead{Origin: vs.origin, Size: 42, Root: sha256.Sum256([]byte("root"))}

	signed, err := vs.assembleCheckpoint(c, sigsBy(c, keys[:3]))
	if err != nil {
		t.Fatal(err)
	}
	// The format of the contract, readable by x/mod/sumdb/note.
	wantText := "cloister.ledger/test-chain\n42\n" + base64.StdEncoding.EncodeToString(c.Root[:]) + "\n"
	if c.Text() != wantText || !strings.HasPrefix(string(signed), wantText+"\n— test-chain/validator-") {
		t.Fatalf("signed checkpoint:\n%s", signed)
	}
	got, err := verify.OpenCheckpoint(signed, vs.public)
	if err != nil || (logHead{got.Origin, got.Size, got.Root}) != c || len(got.Signers) != 3 {
		t.Fatalf("verify.OpenCheckpoint = %+v, %v", got, err)
	}
	tx := encodeCheckpointTx(signed)
	if _, err := vs.parseCheckpointTx(tx, c); err != nil {
		t.Fatal(err)
	}

	// Two of four is not more than 2/3: not assembled.
	if _, err := vs.assembleCheckpoint(c, sigsBy(c, keys[:2])); err == nil {
		t.Fatal("assembled a checkpoint with 2 of 4 signatures")
	}
	// A checkpoint for another tree is refused by the block check.
	other := c
	other.Size++
	if _, err := vs.parseCheckpointTx(tx, other); err == nil {
		t.Fatal("checkpoint for the wrong tree accepted")
	}
	// Signatures over another text are dropped when assembling.
	if _, err := vs.assembleCheckpoint(c, sigsBy(other, keys)); err == nil {
		t.Fatal("assembled from signatures over another checkpoint")
	}
	// A witness's cosignature is ignored by the verifier but has no place
	// in a block: the block carries what the validators signed, nothing
	// added.
	stranger := noteSignerFor(t, "witness.example/w1", newTestKey(t))
	withStranger, err := note.Sign(&note.Note{Text: c.Text(), Sigs: mustOpen(t, signed, vs).Sigs}, stranger)
	if err != nil {
		t.Fatal(err)
	}
	if cp, err := verify.OpenCheckpoint(withStranger, vs.public); err != nil || len(cp.Unknown) != 1 {
		t.Fatalf("the verifier on a witnessed checkpoint: %+v, %v", cp, err)
	}
	if _, err := vs.parseCheckpointTx(encodeCheckpointTx(withStranger), c); err == nil || !strings.Contains(err.Error(), "unknown key") {
		t.Fatalf("a block checkpoint with a stranger's signature: err = %v", err)
	}
	// Extension lines are ignored by the verifier, refused in a block.
	ext := mustSignNote(t, vs, c.Text()+"extension\n", keys)
	if _, err := vs.parseCheckpointTx(encodeCheckpointTx(ext), c); err == nil {
		t.Fatal("a block checkpoint with an extension line accepted")
	}
	// A tampered note fails.
	tampered := bytes.Replace(signed, []byte("\n42\n"), []byte("\n43\n"), 1)
	if _, err := verify.OpenCheckpoint(tampered, vs.public); !errors.Is(err, verify.ErrBadCheckpointSignature) {
		t.Fatalf("tampered checkpoint: %v", err)
	}
}

func mustOpen(t *testing.T, msg []byte, vs *validatorSet) *note.Note {
	var list []note.Verifier
	for _, v := range vs.public.Validators {
		nv, err := note.NewVerifier(v.Key)
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, nv)
	}
	n, err := note.Open(msg, note.VerifierList(list...))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustSignNote(t *testing.T, vs *validatorSet, text string, keys []ed25519.PrivateKey) []byte {
	var signers []note.Signer
	for _, k := range keys {
		m := vs.byAddress(verify.ValidatorAddress(k.Public().(ed25519.PublicKey)))
		signers = append(signers, presignedSigner{m.info.Name, m.keyHash, ed25519.Sign(k, []byte(text))})
	}
	b, err := note.Sign(&note.Note{Text: text}, signers...)
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
	return keyedSigner{presignedSigner{name, v.KeyHash(), nil}, k}
}

// keyedSigner signs for real; presignedSigner only replays.
type keyedSigner struct {
	presignedSigner
	k ed25519.PrivateKey
}

func (s keyedSigner) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.k, msg), nil }
