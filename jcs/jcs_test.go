package jcs

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"os"
	"reflect"
	"strconv"
	"testing"
)

// vectors is testdata/vectors.json: the known answers other
// implementations (a browser verifier, say) check themselves against too.
type vectors struct {
	MaxDepth  int `json:"max_depth"`
	Canonical []struct {
		Name, Input, Output string
	} `json:"canonical"`
	Numbers []struct {
		IEEE754 string `json:"ieee754"`
		Output  string `json:"output"`
	} `json:"numbers"`
	Invalid []struct {
		Name     string `json:"name"`
		Input    string `json:"input"`
		InputHex string `json:"input_hex"`
		Error    string `json:"error"`
	} `json:"invalid"`
}

func loadVectors(t testing.TB) *vectors {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if v.MaxDepth != MaxDepth || len(v.Canonical) == 0 || len(v.Numbers) == 0 || len(v.Invalid) == 0 {
		t.Fatalf("testdata/vectors.json: max_depth %d (package: %d) or an empty section", v.MaxDepth, MaxDepth)
	}
	return &v
}

// RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text.
func TestFormatNumberVectors(t *testing.T) {
	t.Parallel()
	for _, c := range loadVectors(t).Numbers {
		bits, err := strconv.ParseUint(c.IEEE754, 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		if got := FormatNumber(math.Float64frombits(bits)); got != c.Output {
			t.Errorf("%s: got %s, want %s", c.IEEE754, got, c.Output)
		}
	}
}

// RFC 8785 section 3.2 examples and the edge cases of the vectors.
func TestCanonicalVectors(t *testing.T) {
	t.Parallel()
	for _, c := range loadVectors(t).Canonical {
		got, err := Canonicalize([]byte(c.Input))
		if err != nil {
			t.Errorf("%s: %v", c.Name, err)
			continue
		}
		if string(got) != c.Output {
			t.Errorf("%s: Canonicalize(%.80q)\n got %q\nwant %q", c.Name, c.Input, got, c.Output)
		}
	}
}

func TestInvalidVectors(t *testing.T) {
	t.Parallel()
	for _, c := range loadVectors(t).Invalid {
		in := []byte(c.Input)
		if c.InputHex != "" {
			var err error
			if in, err = hex.DecodeString(c.InputHex); err != nil {
				t.Fatal(err)
			}
		}
		_, err := Parse(in)
		want := map[string]error{"syntax": ErrSyntax, "duplicate_key": ErrDuplicateKey}[c.Error]
		if want == nil {
			t.Fatalf("%s: unknown error kind %q", c.Name, c.Error)
		}
		if !errors.Is(err, want) {
			t.Errorf("%s: Parse(%.60q) = %v, want %s", c.Name, in, err, c.Error)
		}
	}
}

// TestDuplicateKeyPath: the error names where the duplicate is.
func TestDuplicateKeyPath(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte(`{"x":[{"k":1,"k":1}]}`))
	var d *DuplicateKeyError
	if !errors.As(err, &d) || d.Path != "x[0]" || d.Key != "k" {
		t.Fatalf("err = %v", err)
	}
}

func TestSyntaxErrorLine(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte("{\n\"a\": 1,\n\"b\": ?\n}"))
	var se *SyntaxError
	if !errors.As(err, &se) || se.Line != 3 {
		t.Fatalf("err = %v", err)
	}
}

func FuzzCanonical(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5e3,"x\u00e9"],"b":null}`, `[]`, `"\ud83d\ude00"`, `-0.0`, `1e-7`, `{"\u20ac":1,"\ufb33":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Canonicalize(data)
		if err != nil {
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrDuplicateKey) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		// The canonical form is itself strict JSON, a fixed point, and
		// means the same as the input to encoding/json.
		c2, err := Canonicalize(c)
		if err != nil {
			t.Fatalf("canonical form does not parse: %v\n%s", err, c)
		}
		if string(c2) != string(c) {
			t.Fatalf("not a fixed point:\n%s\n%s", c, c2)
		}
		var a, b any
		if err := json.Unmarshal(data, &a); err != nil {
			t.Fatalf("encoding/json rejects input we accepted: %v", err)
		}
		if err := json.Unmarshal(c, &b); err != nil {
			t.Fatal(err)
		}
		// DeepEqual compares floats with ==, so -0 and 0 are equal, as
		// RFC 8785 intends.
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("meaning changed:\n%s\n%s", data, c)
		}
	})
}

func TestObjectEnd(t *testing.T) {
	for in, want := range map[string]int{
		`{}`:               2,
		`{"a":"}"},`:       9,
		`{"a":"\"}"}x`:     11,
		`[{"a":[1,{}]}],`:  14,
		`{"a":{"b":1}`:     -1,
		`{"a":"\\"}`:       10,
		`{"unclosed":"}`:   -1,
		`{"a":[]}{"b":[]}`: 8,
	} {
		if got := ObjectEnd([]byte(in), 0); got != want {
			t.Errorf("ObjectEnd(%s) = %d, want %d", in, got, want)
		}
	}
}
