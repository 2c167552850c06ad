package callname

import (
	"regexp"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, ok := range []string{"cloister.sha256/v1", "a/v0", "org-1.model_x.call/v12"} {
		if err := Validate(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Echo/v1", "cloister.sha256", "cloister..x/v1", ".x/v1", "x/v", "x/v1/", "x /v1", "x/v1\x00", strings.Repeat("a", MaxLen-2) + "/v1"} {
		if err := Validate(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzValidate: the hand-written check agrees with the rule written as a
// regular expression.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"cloister.sha256/v1", "a/v0", "x/v", "a..b/v1", "a-b_c.d/v99", "/v1", "a/v1x"} {
		f.Add(s)
	}
	re := regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*/v[0-9]+$`)
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := Validate(s) == nil, len(s) <= MaxLen && re.MatchString(s); got != want {
			t.Fatalf("Validate(%q) accepts: %v, the rule: %v", s, got, want)
		}
	})
}
