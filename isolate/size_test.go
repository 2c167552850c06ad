package isolate

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		{"0", 0}, {"1000", 1000}, {"1000B", 1000}, {"512KiB", 512 << 10}, {"64MiB", 64 << 20},
		{"1GiB", 1 << 30}, {"2TiB", 2 << 40}, {"10MB", 10_000_000}, {"3kB", 3000}, {"3KB", 3000}, {"1GB", 1e9},
	} {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "empty"}, {"MiB", "no number"}, {"-1", "not a whole number"}, {"1.5GiB", "not a whole number"},
		{"64 MiB", "not a whole number"}, {"64mib", "not a whole number"}, {"+5", "not a whole number"},
		{"99999999999999999999", "too large"}, {"16777216TiB", "too large"}, {"8589934592GiB", "too large"},
		{"0x10", "not a whole number"}, {"10Mi", "not a whole number"},
	} {
		if _, err := ParseSize(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSize(%q) error %v, want one saying %q", tc.in, err, tc.want)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"64MiB", "1GiB", "512KiB", "1000", "10MB", "", "1.5G", "18446744073709551615", "9999999TiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if n != 0 {
				t.Fatalf("error with a value: %d", n)
			}
			return
		}
		if n > 1<<63-1 {
			t.Fatalf("%q parsed to %d, beyond int64", s, n)
		}
	})
}
