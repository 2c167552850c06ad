package ledger

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"os"
	"testing"
)

var updateVectors = flag.Bool("update-vectors", false, "rewrite ledger/testdata/checkpoint-vector.json")

// checkpointVector is a known-answer test for other implementations of
// the checkpoint format: validator keys from fixed seeds, the validator
// set as /v1/validators publishes it, and the exact cosigned note.
type checkpointVector struct {
	Comment    string          `json:"comment"`
	ChainID    string          `json:"chain_id"`
	Seeds      []string        `json:"validator_seeds_hex"`
	Validators []ValidatorInfo `json:"validators"`
	Size       uint64          `json:"size"`
	Root       []byte          `json:"root"`
	Note       string          `json:"note"`
}

func TestCheckpointVector(t *testing.T) {
	v := checkpointVector{
		Comment: "validator i (1..3) has the Ed25519 seed of 32 bytes 0x0i and power 1; root = SHA-256(\"vector root\"); " +
			"the note carries all three signatures, and any two of them alone are not more than 2/3 of the power",
		ChainID: "vector-chain", Size: 1234,
	}
	root := sha256.Sum256([]byte("vector root"))
	v.Root = root[:]
	var keys []ed25519.PrivateKey
	var vks []validatorKey
	for i := 1; i <= 3; i++ {
		seed := bytes.Repeat([]byte{byte(i)}, 32)
		k := ed25519.NewKeyFromSeed(seed)
		keys = append(keys, k)
		vks = append(vks, validatorKey{pub: k.Public().(ed25519.PublicKey), power: 1})
		v.Seeds = append(v.Seeds, hexString(seed))
	}
	vs, err := newValidatorSet(v.ChainID, vks)
	if err != nil {
		t.Fatal(err)
	}
	v.Validators = vs.infos()
	c := Checkpoint{Origin: Origin(v.ChainID), Size: v.Size, Root: root}
	signed, err := vs.assembleCheckpoint(c, sigsBy(c, keys))
	if err != nil {
		t.Fatal(err)
	}
	v.Note = string(signed)
	if got, err := VerifyCheckpoint(signed, Origin(v.ChainID), v.Validators); err != nil || got != c {
		t.Fatalf("vector does not verify: %v", err)
	}
	lines := bytes.SplitAfter(signed, []byte("\n"))
	twoOfThree := bytes.Join(lines[:len(lines)-2], nil) // drop the last signature line
	if _, err := VerifyCheckpoint(twoOfThree, Origin(v.ChainID), v.Validators); err == nil {
		t.Fatal("two of three signatures verified")
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	const path = "testdata/checkpoint-vector.json"
	if *updateVectors {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update-vectors to create it)", err)
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("checkpoint format changed; %s no longer matches:\n%s", path, b)
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 2*len(b))
	for i, c := range b {
		out[2*i], out[2*i+1] = digits[c>>4], digits[c&15]
	}
	return string(out)
}
