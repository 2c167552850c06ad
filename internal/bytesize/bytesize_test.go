package bytesize

import (
	"math"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{
		"0": 0, "1000": 1000, "1000B": 1000, "1B": 1, "512KiB": 512 << 10, "64MiB": 64 << 20,
		"1GiB": 1 << 30, "4GiB": 4 << 30, "2TiB": 2 << 40, "10MB": 10_000_000, "16MB": 16e6,
		"3kB": 3000, "3KB": 3000, "1GB": 1e9, "1TB": 1e12, "007KiB": 7 << 10,
		"9223372036854775807":  math.MaxInt64,
		"9223372036854775807B": math.MaxInt64,
		"8388607TiB":           8388607 << 40,
	} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"":                     "size is empty",
		"MiB":                  "has a unit but no number",
		"B":                    "has a unit but no number",
		"-1":                   "want an integer and a unit",
		"+5":                   "want an integer and a unit",
		"1.5GiB":               "want an integer and a unit",
		"1.5MiB":               "want an integer and a unit",
		"64 MiB":               "want an integer and a unit",
		" 1":                   "want an integer and a unit",
		"64mib":                "want an integer and a unit",
		"0x10":                 "want an integer and a unit",
		"10Mi":                 "want an integer and a unit",
		"1e6":                  "want an integer and a unit",
		"１":                    "want an integer and a unit", // a full-width digit
		"99999999999999999999": "too large",
		"9223372036854775808":  "too large",
		"8388608TiB":           "too large",
		"16777216TiB":          "too large",
		"8589934592GiB":        "too large",
		"9000000TiB":           "too large",
	} {
		got, err := Parse(in)
		if err == nil || got != 0 || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %d, %v; want an error saying %q", in, got, err, want)
		}
	}
	// The policy documentation quotes this message.
	if _, err := Parse("64 MiB"); err == nil || !strings.HasPrefix(err.Error(), `size "64 MiB": want an integer and a unit such as 256MiB, 16MB or 1024`) {
		t.Errorf("Parse(\"64 MiB\") error %v", err)
	}
}

// FuzzParse: sizes arrive in policies from other parties. Parse must never
// panic, never return a negative value or a value with an error, and accept
// only digits followed by at most one known unit.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"64MiB", "1GiB", "512KiB", "1000", "10MB", "", "1.5G", "18446744073709551615", "9999999TiB", "B", "0B"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Parse(s)
		if err != nil {
			if n != 0 {
				t.Fatalf("Parse(%q): error %v with a value %d", s, err, n)
			}
			return
		}
		if n < 0 {
			t.Fatalf("Parse(%q) = %d, negative", s, n)
		}
		num := s
		for _, u := range units {
			if rest, ok := strings.CutSuffix(s, u.suffix); ok {
				num = rest
				break
			}
		}
		if num == "" || strings.TrimLeft(num, "0123456789") != "" {
			t.Fatalf("Parse(%q) = %d accepted more than digits and a unit", s, n)
		}
	})
}
