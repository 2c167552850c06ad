// Package callname is the one rule for the names of host calls, the calls
// a program makes to its node while it runs: a dotted lower-case name and
// a version, "cloister.sha256/v1". Policies name them (policy), the
// runtime checks them (isolate).
package callname

import "fmt"

// MaxLen is the longest name, in bytes.
const MaxLen = 128

// Validate checks that name can name a host call: words of a-z and 0-9
// joined by single '.', '_' or '-', then "/v" and a number. (Checked by
// hand rather than with a regular expression: every jailed worker links
// this package, and compiling one at start-up cost each a third of a
// millisecond.)
func Validate(name string) error {
	if !valid(name) {
		return fmt.Errorf("host call name %q: want a dotted lower-case name and a version, like \"cloister.sha256/v1\" (at most %d bytes)", name, MaxLen)
	}
	return nil
}

func valid(name string) bool {
	if len(name) > MaxLen {
		return false
	}
	word := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	digit := func(c byte) bool { return c >= '0' && c <= '9' }
	i := 0
	for {
		start := i
		for i < len(name) && word(name[i]) {
			i++
		}
		if i == start || i == len(name) {
			return false
		}
		if c := name[i]; c == '.' || c == '_' || c == '-' {
			i++
			continue
		}
		break
	}
	if name[i] != '/' || i+2 >= len(name) || name[i+1] != 'v' {
		return false
	}
	for _, c := range []byte(name[i+2:]) {
		if !digit(c) {
			return false
		}
	}
	return true
}
