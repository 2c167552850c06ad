// Package callname is the one rule for the names of host calls, the calls
// a program makes to its node while it runs: a dotted lower-case name and
// a version, "cloister.sha256/v1". Policies name them (policy), the
// runtime checks them (isolate).
package callname

import (
	"fmt"
	"regexp"
)

// MaxLen is the longest name, in bytes.
const MaxLen = 128

var re = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*/v[0-9]+$`)

// Validate checks that name can name a host call.
func Validate(name string) error {
	if len(name) > MaxLen || !re.MatchString(name) {
		return fmt.Errorf("host call name %q: want a dotted lower-case name and a version, like \"cloister.sha256/v1\" (at most %d bytes)", name, MaxLen)
	}
	return nil
}
