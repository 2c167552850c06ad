package policy_test

import (
	"fmt"
	"os"
	"time"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/policy"
)

// Every party parses the same policy document and gets the same hash,
// whatever the whitespace or key order; the hash is what attestation binds.
func ExampleParse() {
	doc, err := os.ReadFile("../examples/policies/psi-sum.json")
	if err != nil {
		panic(err)
	}
	p, err := policy.Parse(doc)
	if err != nil {
		fmt.Println(err) // every problem, each with its field
		return
	}
	readers, _ := p.OutputReaders("result.json")
	provider, _ := p.InputProvider("customers.csv")
	fmt.Println(p.Name, readers, provider, p.Expired(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)))
	fmt.Println(len(p.HashHex()))
	// Output:
	// psi-sum [dave] bob false
	// 64
}

// ReferenceValues turns a policy's isolate entry into what package attest
// judges evidence with.
func ExamplePolicy_ReferenceValues() {
	doc, err := os.ReadFile("../examples/policies/psi-sum-tee.json")
	if err != nil {
		panic(err)
	}
	p, err := policy.Parse(doc)
	if err != nil {
		panic(err)
	}
	ref, _, err := p.ReferenceValues(attest.ClassSEVSNP)
	if err != nil {
		panic(err)
	}
	fmt.Println(len(ref.Measurements), ref.MinSVN["snp"], *ref.MaxVMPL, ref.RequireHardware, ref.AllowDebug)
	// Output: 1 8 0 true false
}
