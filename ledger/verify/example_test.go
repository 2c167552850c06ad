package verify_test

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// A party that received an entry's bytes checks, by itself, that they are
// an entry in the one canonical form, signed by its submitter, and
// computes the leaf hash an inclusion proof must lead from.
func ExampleDecodeEntry() {
	tx := []byte(`{"entry":{"body":{"text":"hello"},"kind":"note","nonce":1,` +
		`"submitter":"ed25519:iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=","time":"2026-01-02T03:04:05.678Z"},` +
		`"sig":"f5Qwgb5XCkTrurRdjTZg6D7qUs0vfnM/8ZNNIXvKDTgNCI98ESfPV1ToW9JH60uIsFKVct+m1r+fQUQTqQpcAw=="}`)
	se, err := verify.DecodeEntry(tx)
	if err != nil {
		fmt.Println("not an entry:", err)
		return
	}
	fmt.Println(se.Entry.Kind, string(se.Entry.Body), se.VerifySignature() == nil)
	leaf := verify.LeafHash(tx)
	fmt.Println(hex.EncodeToString(leaf[:8]))

	// The same entry with a space added is another byte string: refused.
	_, err = verify.DecodeEntry(append([]byte(" "), tx...))
	fmt.Println(err != nil)
	// Output:
	// note {"text":"hello"} true
	// ffc524f673eab6fc
	// true
}

// OpenCheckpoint trusts a checkpoint only if validators holding more than
// two thirds of the voting power of the pinned set signed it.
func ExampleOpenCheckpoint() {
	b, err := os.ReadFile("testdata/checkpoint.json")
	if err != nil {
		panic(err)
	}
	var v struct {
		ChainID    string             `json:"chain_id"`
		Validators []verify.Validator `json:"validators"`
		Note       string             `json:"note"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		panic(err)
	}
	set, err := verify.NewValidatorSet(v.ChainID, v.Validators)
	if err != nil {
		panic(err)
	}
	cp, err := verify.OpenCheckpoint([]byte(v.Note), set)
	if err != nil {
		fmt.Println("not trusted:", err)
		return
	}
	fmt.Printf("%s size %d, signed by power %d of %d\n", cp.Origin, cp.Size, cp.SignedPower, cp.TotalPower)
	// Output: cloister.ledger/vector-chain size 1234, signed by power 3 of 3
}
