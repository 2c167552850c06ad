package ledger

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"testing"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// TestCheckpointVectorSigningSide: the validators' side (keys, validator
// set as /v1/validators publishes it, assembled note) produces exactly
// package verify's known-answer vector, verify/testdata/checkpoint.json,
// which the verifier's own test checks from the other side.
func TestCheckpointVectorSigningSide(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("verify/testdata/checkpoint.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		ChainID    string             `json:"chain_id"`
		Seeds      []string           `json:"validator_seeds_hex"`
		Validators []verify.Validator `json:"validators"`
		Size       uint64             `json:"size"`
		Root       []byte             `json:"root"`
		Note       string             `json:"note"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	var keys []ed25519.PrivateKey
	var vks []validatorKey
	for i := range v.Seeds {
		k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(i + 1)}, 32))
		keys = append(keys, k)
		vks = append(vks, validatorKey{pub: k.Public().(ed25519.PublicKey), power: 1})
	}
	vs, err := newValidatorSet(v.ChainID, vks)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range v.Validators {
		if got := vs.public.Validators[i]; got != want {
			t.Errorf("validator %d: the ledger publishes %+v, the vector says %+v", i, got, want)
		}
	}
	c := logHead{Origin: Origin(v.ChainID), Size: v.Size}
	copy(c.Root[:], v.Root)
	signed, err := vs.assembleCheckpoint(c, sigsBy(c, keys))
	if err != nil {
		t.Fatal(err)
	}
	if string(signed) != v.Note {
		t.Fatalf("the assembled note differs from the vector:\n%s\nwant\n%s", signed, v.Note)
	}
}
