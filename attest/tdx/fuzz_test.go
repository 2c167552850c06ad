package tdx

import (
	"testing"
)

// FuzzPCSCollateral: one arbitrary item among the real PCS responses must
// never panic the collateral classifier or the conversion to DCAP form.
func FuzzPCSCollateral(f *testing.F) {
	items := pcsItems(f, "sample_tcbInfo_response")
	for _, it := range items {
		f.Add(it)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePCSCollateral(append([][]byte{b}, items[1:]...))
		if err == nil {
			_, _ = p.toDCAP()
		}
	})
}
