// Command wordcount counts the lines, words and bytes of /input/text, as
// wc(1) does: lines are newline characters, words are maximal runs of
// non-space characters (Unicode white space separates them; bytes that are
// not valid UTF-8 count as word characters). It writes
// /output/count.json and prints a one-line summary.
//
//	cloister run --input text=README.md --output-dir out examples/wordcount/wordcount.wasm
package main

import (
	"bufio"
	"fmt"
	"io"
	"unicode"
	"unicode/utf8"

	"github.com/cloisterhq/cloister/guest"
)

// Counts is the program's output (count.json).
type Counts struct {
	Lines int64 `json:"lines"`
	Words int64 `json:"words"`
	Bytes int64 `json:"bytes"`
}

func main() {
	if err := run(); err != nil {
		guest.Fail("wordcount: %v", err)
	}
}

func run() error {
	f, err := guest.OpenInput("text")
	if err != nil {
		return err
	}
	defer f.Close()
	c, err := Count(f)
	if err != nil {
		return fmt.Errorf("input %q: %w", "text", err)
	}
	if err := guest.WriteJSON("count.json", c); err != nil {
		return err
	}
	_, err = fmt.Printf("%d lines, %d words, %d bytes\n", c.Lines, c.Words, c.Bytes)
	return err
}

// Count reads r to the end. It streams, so the input may be larger than
// the guest's memory.
func Count(r io.Reader) (Counts, error) {
	var c Counts
	br := bufio.NewReaderSize(r, 64<<10)
	inWord := false
	for {
		ru, size, err := br.ReadRune()
		if err == io.EOF {
			return c, nil
		}
		if err != nil {
			return c, err
		}
		c.Bytes += int64(size)
		if ru == '\n' {
			c.Lines++
		}
		space := ru != utf8.RuneError && unicode.IsSpace(ru)
		if !space && !inWord {
			c.Words++
		}
		inWord = !space
	}
}
