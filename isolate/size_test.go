package isolate

import (
	"strings"
	"testing"
)

// The grammar is tested in package bytesize; this checks the conversion.
func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "64MiB": 64 << 20, "10MB": 10_000_000, "9223372036854775807": 1<<63 - 1} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5GiB", "18446744073709551615"} {
		if got, err := ParseSize(in); err == nil || got != 0 || !strings.Contains(err.Error(), "size") {
			t.Errorf("ParseSize(%q) = %d, %v; want an error", in, got, err)
		}
	}
}
