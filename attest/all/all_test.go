package all

import (
	"testing"

	"github.com/cloisterhq/cloister/attest"
)

func TestEveryClassRegistered(t *testing.T) {
	for _, c := range []attest.Class{attest.ClassSoftware, attest.ClassTPM, attest.ClassSEVSNP, attest.ClassTDX, attest.ClassSGX, attest.ClassNitro, attest.ClassRATLS, attest.ClassEAR, attest.ClassCCA} {
		v, err := attest.VerifierFor(c)
		if err != nil {
			t.Errorf("%s: %v", c, err)
			continue
		}
		if v.Class() != c {
			t.Errorf("verifier registered for %s says it is %s", c, v.Class())
		}
	}
}
