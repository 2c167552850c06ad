package callname

import (
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
