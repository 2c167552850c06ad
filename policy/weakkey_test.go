package policy

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// The eight small-order points of edwards25519, canonically encoded
// (keys/weak_test.go checks the list).
var smallOrderPoints = []string{
	"0100000000000000000000000000000000000000000000000000000000000000",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"0000000000000000000000000000000000000000000000000000000000000000",
	"0000000000000000000000000000000000000000000000000000000000000080",
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
}

func ed25519String(t *testing.T, h string) string {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	return "ed25519:" + base64.StdEncoding.EncodeToString(b)
}

// A principal's signing_key or a software platform key that is a
// small-order point is refused, naming the field: signatures under such a
// key can be forged without any private key.
func TestSmallOrderKeysRefused(t *testing.T) {
	t.Parallel()
	for i, h := range smallOrderPoints {
		k := ed25519String(t, h)
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			d := psiDoc(t)
			pr(d, 1)["signing_key"] = k
			ps := problemsOf(t, encode(t, d))
			if !hasProblem(ps, "principals[1].signing_key", "small-order") {
				t.Errorf("principal key %s: problems %v", h, ps)
			}
			d = psiDoc(t)
			iso(d)["platform_keys"] = []any{k}
			ps = problemsOf(t, encode(t, d))
			if !hasProblem(ps, "isolates[0].platform_keys[0]", "small-order") {
				t.Errorf("platform key %s: problems %v", h, ps)
			}
			for _, p := range ps {
				if strings.Contains(p.Message, "not an ed25519 key") {
					t.Errorf("%s: %q calls a well-formed weak key malformed", p.Field, p.Message)
				}
			}
		})
	}
}

// A non-canonical spelling of a key is refused too: each key has one
// spelling, so a policy has one hash.
func TestNonCanonicalKeyRefused(t *testing.T) {
	t.Parallel()
	d := psiDoc(t)
	// y = 2^255-19+1, an unreduced spelling of the identity's y.
	pr(d, 2)["signing_key"] = ed25519String(t, "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
	if ps := problemsOf(t, encode(t, d)); !hasProblem(ps, "principals[2].signing_key", "canonical") {
		t.Errorf("problems %v", ps)
	}
}
