package jcs

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text.
func TestFormatNumberRFC8785(t *testing.T) {
	cases := []struct {
		bits uint64
		want string
	}{
		{0x0000000000000000, "0"},
		{0x8000000000000000, "0"},
		{0x0000000000000001, "5e-324"},
		{0x8000000000000001, "-5e-324"},
		{0x7fefffffffffffff, "1.7976931348623157e+308"},
		{0xffefffffffffffff, "-1.7976931348623157e+308"},
		{0x4340000000000000, "9007199254740992"},
		{0xc340000000000000, "-9007199254740992"},
		{0x4430000000000000, "295147905179352830000"},
		{0x44b52d02c7e14af5, "9.999999999999997e+22"},
		{0x44b52d02c7e14af6, "1e+23"},
		{0x44b52d02c7e14af7, "1.0000000000000001e+23"},
		{0x444b1ae4d6e2ef4e, "999999999999999700000"},
		{0x444b1ae4d6e2ef4f, "999999999999999900000"},
		{0x444b1ae4d6e2ef50, "1e+21"},
		{0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
		{0x3eb0c6f7a0b5ed8d, "0.000001"},
		{0x41b3de4355555553, "333333333.3333332"},
		{0x41b3de4355555554, "333333333.33333325"},
		{0x41b3de4355555555, "333333333.3333333"},
		{0x41b3de4355555556, "333333333.3333334"},
		{0x41b3de4355555557, "333333333.33333343"},
		{0xbecbf647612f3696, "-0.0000033333333333333333"},
		{0x43143ff3c1cb0959, "1424953923781206.2"},
	}
	for _, c := range cases {
		if got := FormatNumber(math.Float64frombits(c.bits)); got != c.want {
			t.Errorf("%016x: got %s, want %s", c.bits, got, c.want)
		}
	}
}

// RFC 8785 section 3.2.4 and 3.2.3 examples.
func TestCanonicalizeRFC8785(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}`, `{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`},
		{`{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}`, "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"}"},
		{`  [ ]  `, `[]`},
		{`{"b":{"z":1,"a":[{}]},"a":-0}`, `{"a":0,"b":{"a":[{}],"z":1}}`},
		{`"\u001f\u007f"`, "\"\\u001f\u007f\""},
	}
	for _, c := range cases {
		got, err := Canonicalize([]byte(c.in))
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if string(got) != c.want {
			t.Errorf("Canonicalize(%s)\n got %s\nwant %s", c.in, got, c.want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	cases := map[string]string{
		"empty":              ``,
		"trailing data":      `{} {}`,
		"trailing comma":     `[1,]`,
		"object trailing ,":  `{"a":1,}`,
		"single quotes":      `{'a':1}`,
		"leading zero":       `01`,
		"plus":               `+1`,
		"bare dot":           `1.`,
		"infinite":           `1e400`,
		"NaN":                `NaN`,
		"invalid utf8":       "\"\xff\"",
		"lone high":          `"\ud800"`,
		"lone low":           `"\udc00"`,
		"high then other":    `"\ud800\u0041"`,
		"raw control":        "\"a\tb\"",
		"bad escape":         `"\x"`,
		"unterminated":       `"abc`,
		"bom":                "\xef\xbb\xbf{}",
		"comment":            `{} // no`,
		"too deep":           strings.Repeat("[", MaxDepth+2) + strings.Repeat("]", MaxDepth+2),
		"truncated literal":  `tru`,
		"capitalised":        `True`,
		"missing colon":      `{"a" 1}`,
		"unterminated array": `[1`,
	}
	for name, in := range cases {
		_, err := Parse([]byte(in))
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("%s: err = %v, want ErrSyntax", name, err)
		}
	}
}

func TestDuplicateKeys(t *testing.T) {
	for _, in := range []string{`{"a":1,"a":2}`, `{"a":1,"\u0061":2}`, `{"x":[{"k":1,"k":1}]}`} {
		_, err := Parse([]byte(in))
		var d *DuplicateKeyError
		if !errors.As(err, &d) || !errors.Is(err, ErrDuplicateKey) {
			t.Fatalf("%s: err = %v", in, err)
		}
		if in == `{"x":[{"k":1,"k":1}]}` && (d.Path != "x[0]" || d.Key != "k") {
			t.Fatalf("path %q key %q", d.Path, d.Key)
		}
	}
}

func TestSyntaxErrorLine(t *testing.T) {
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
