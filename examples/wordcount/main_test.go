package main

import (
	"strings"
	"testing"
	"testing/iotest"

	"github.com/cloisterhq/cloister/examples/internal/guesttest"
)

func TestSample(t *testing.T) {
	root := guesttest.Root(t, map[string][]byte{"text": guesttest.Testdata(t, "input/text")})
	if err := run(); err != nil {
		t.Fatal(err)
	}
	// The expected figures agree with GNU wc on the same file.
	if got, want := guesttest.Output(t, root, "count.json"), guesttest.Testdata(t, "output/count.json"); string(got) != string(want) {
		t.Fatalf("count.json = %s, want %s", got, want)
	}
}

func TestCount(t *testing.T) {
	cases := map[string]Counts{
		"":                    {0, 0, 0},
		"\n":                  {1, 0, 1},
		"one":                 {0, 1, 3},
		"  two  words \n":     {1, 2, 14},
		"a\u00a0b":            {0, 2, 4}, // no-break space is Unicode white space
		"é\u2003è\n":          {1, 2, 8}, // em space separates words
		"\xff\xfe bad utf8":   {0, 3, 11},
		"tab\tsep\r\nrated\n": {2, 3, 15},
	}
	for in, want := range cases {
		got, err := Count(strings.NewReader(in))
		if err != nil || got != want {
			t.Errorf("Count(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}

// Words split across the reader's internal buffer boundary are counted once.
func TestCountAcrossReads(t *testing.T) {
	in := strings.Repeat("word ", 30000) // 150 000 bytes, more than one 64 KiB buffer
	got, err := Count(iotest.OneByteReader(strings.NewReader(in)))
	if err != nil || got != (Counts{0, 30000, 150000}) {
		t.Fatalf("Count = %+v, %v", got, err)
	}
}

func TestMissingInput(t *testing.T) {
	guesttest.Root(t, nil)
	if err := run(); err == nil || !strings.Contains(err.Error(), `input "text"`) {
		t.Fatalf("run without input = %v", err)
	}
}
