package isolate

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// sizeUnits maps each accepted suffix to its multiplier. Binary (KiB, MiB,
// GiB, TiB) and decimal (kB/KB, MB, GB, TB) units are both accepted because
// people write both; "B" or no suffix means bytes.
var sizeUnits = []struct {
	suffix string
	mult   uint64
}{
	// Longest suffixes first so that "MiB" is not read as "B".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"kB", 1000}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"TB", 1000 * 1000 * 1000 * 1000},
	{"B", 1},
}

// ParseSize parses a byte count such as "64MiB", "1GiB", "512KiB", "10MB"
// or "1000" (bytes). The number must be a non-negative integer; fractions,
// signs, spaces and unknown units are refused with an error that says what
// was wrong.
func ParseSize(s string) (uint64, error) {
	if s == "" {
		return 0, errors.New("size is empty (want e.g. 64MiB, 1GiB, 512KiB or a byte count)")
	}
	num, mult := s, uint64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	if num == "" {
		return 0, fmt.Errorf("size %q has a unit but no number", s)
	}
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("size %q: %q is not a whole number followed by one of B, KiB, MiB, GiB, TiB, kB, MB, GB, TB", s, num)
		}
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	hi, lo := bits.Mul64(n, mult)
	if hi != 0 || lo > math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return lo, nil
}
