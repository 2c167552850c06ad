// Package bytesize is the one parser of byte sizes written by people:
// "256MiB", "16MB", "1048576" — policy limits, the command line's --memory
// and --max-output, and any later size a user writes.
//
// It is a leaf package (standard library only) so that every package may
// use it: policy is public and builds wherever clients do, isolate is
// Linux-only and pulls in wazero, and neither may import the other. It is
// not a general unit library: no fractions, no spaces, no lower-case units.
package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// units maps each accepted suffix to its multiplier, longest first so that
// "MiB" is not read as "B". Binary units are the norm for memory; decimal
// ones are accepted because people write "16MB".
var units = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"kB", 1000}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"TB", 1000 * 1000 * 1000 * 1000},
	{"B", 1},
}

// want is the part of every syntax error that says what to write instead.
const want = "want an integer and a unit such as 256MiB, 16MB or 1024 (units: B, KiB, MiB, GiB, TiB, kB, KB, MB, GB, TB)"

// Parse reads a byte size: a non-negative decimal integer with an optional
// unit, "B", "KiB", "MiB", "GiB", "TiB" (powers of 1024) or "kB", "KB",
// "MB", "GB", "TB" (powers of 1000), with no space before the unit. The
// result is at most math.MaxInt64, so it converts to int64 and uint64 alike.
// Errors quote the input and say what was wrong.
func Parse(s string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("size is empty: %s", want)
	}
	num, mult := s, int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = rest, u.mult
			break
		}
	}
	if num == "" {
		return 0, fmt.Errorf("size %q has a unit but no number: %s", s, want)
	}
	if strings.TrimLeft(num, "0123456789") != "" {
		return 0, fmt.Errorf("size %q: %s", s, want)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q is too large (at most %d bytes)", s, int64(math.MaxInt64))
	}
	return n * mult, nil
}
