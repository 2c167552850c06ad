// Package walkthrough turns the shell blocks of the project's guides into
// a script that runs them verbatim, and checks what they print against
// what the guides say they print — so that a guide and the program cannot
// drift apart.
//
// The rules a guide follows (docs/decisions/0171-guides-are-run.md):
//
//   - Every fenced block whose info string is "sh" is run, in order, in
//     one bash shell (variables and the working directory carry over from
//     block to block). Blocks of other languages ("text", "json", "go")
//     are shown, not run.
//   - A block preceded by the line "<!-- walkthrough: skip REASON -->" is
//     not run; the reason is required, and reviewed like code.
//   - Lines of a block are joined into commands: a line ending in "\"
//     goes on with the next, and a here-document ("<<EOF") runs to its
//     terminator.
//   - Comment lines ("# …") right after a command are the output it must
//     print (standard output and error together): every line must match, in
//     order, and nothing else may be printed. In an expected line "…"
//     stands for any text; a line that is only "…" stands for any number of
//     lines. A comment after a blank line, or at the start of a block, is
//     just a comment.
//   - A command whose expected output has a line beginning "cloister: "
//     (an error; warnings excepted) must fail (exit status not 0); every
//     other command must succeed.
package walkthrough

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Block is one fenced shell block of a guide.
type Block struct {
	Doc      string
	Line     int    // line of the opening fence, from 1
	Skip     string // why it is not run; "" if it is
	Commands []Command
}

// Command is one command of a block, as written.
type Command struct {
	Doc  string
	Line int
	Text string // the command's lines, continuation lines and here-document included
	// Expect is the output the guide shows for it, one entry per line;
	// nil when the guide shows none (and it is not checked).
	Expect []string
}

// ExpectsFailure reports whether the guide shows the command failing.
func (c Command) ExpectsFailure() bool {
	for _, l := range c.Expect {
		if strings.HasPrefix(l, "cloister: ") && !strings.HasPrefix(l, "cloister: warning:") {
			return true
		}
	}
	return false
}

var (
	skipRE    = regexp.MustCompile(`^<!-- walkthrough: skip (.+) -->$`)
	heredocRE = regexp.MustCompile(`<<-?\s*['"]?([A-Za-z_][A-Za-z0-9_]*)['"]?`)
)

// Parse finds the shell blocks of a Markdown guide.
func Parse(doc string, md []byte) ([]Block, error) {
	var blocks []Block
	lines := strings.Split(string(md), "\n")
	for i := 0; i < len(lines); i++ {
		fence := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(fence, "```") {
			continue
		}
		info := strings.Fields(strings.TrimPrefix(fence, "```"))
		start := i
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, lines[i])
		}
		if i == len(lines) {
			return nil, fmt.Errorf("%s:%d: the block is not closed", doc, start+1)
		}
		if len(info) == 0 || info[0] != "sh" {
			continue
		}
		b := Block{Doc: doc, Line: start + 1}
		if start > 0 {
			if m := skipRE.FindStringSubmatch(strings.TrimSpace(lines[start-1])); m != nil {
				b.Skip = m[1]
			} else if strings.HasPrefix(strings.TrimSpace(lines[start-1]), "<!-- walkthrough") {
				return nil, fmt.Errorf("%s:%d: want <!-- walkthrough: skip REASON -->", doc, start)
			}
		}
		cmds, err := splitCommands(doc, start+2, body)
		if err != nil {
			return nil, err
		}
		b.Commands = cmds
		blocks = append(blocks, b)
	}
	return blocks, nil
}

// splitCommands joins a block's lines into commands with their expected
// output; first is the line number of body[0].
func splitCommands(doc string, first int, body []string) ([]Command, error) {
	var cmds []Command
	expecting := false // the previous line was a command or its output
	for i := 0; i < len(body); i++ {
		line := body[i]
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			expecting = false
			continue
		case strings.HasPrefix(trimmed, "#"):
			if expecting {
				c := &cmds[len(cmds)-1]
				out := strings.TrimPrefix(trimmed, "#")
				out = strings.TrimPrefix(out, " ")
				c.Expect = append(c.Expect, out)
			}
			continue
		}
		c := Command{Doc: doc, Line: first + i}
		text := []string{line}
		for strings.HasSuffix(strings.TrimRight(line, " "), `\`) && i+1 < len(body) {
			i++
			line = body[i]
			text = append(text, line)
		}
		if m := heredocRE.FindStringSubmatch(strings.Join(text, "\n")); m != nil && !strings.Contains(m[0], "<<<") {
			end := -1
			for j := i + 1; j < len(body); j++ {
				if strings.TrimSpace(body[j]) == m[1] {
					end = j
					break
				}
			}
			if end < 0 {
				return nil, fmt.Errorf("%s:%d: here-document %s is not terminated in the block", doc, c.Line, m[1])
			}
			text = append(text, body[i+1:end+1]...)
			i = end
		}
		c.Text = strings.Join(text, "\n")
		cmds = append(cmds, c)
		expecting = true
	}
	return cmds, nil
}

// Script is the bash script that runs the commands of blocks in order. For
// command n it writes its output to $WALK_OUT/n.out and its exit status to
// $WALK_OUT/n.rc, and it stops at the first command whose exit status is
// not what the guide shows.
func Script(blocks []Block) string {
	var b strings.Builder
	b.WriteString("#!/bin/bash\n# Made by internal/walkthrough from the guides; do not edit.\nset -u\n")
	n := 0
	for _, bl := range blocks {
		if bl.Skip != "" {
			fmt.Fprintf(&b, "\n# %s:%d: not run: %s\n", bl.Doc, bl.Line, bl.Skip)
			continue
		}
		for _, c := range bl.Commands {
			fmt.Fprintf(&b, "\n# %s:%d\n", c.Doc, c.Line)
			for _, e := range c.Expect {
				fmt.Fprintf(&b, "#> %s\n", e) // checked by Match after the run
			}
			fmt.Fprintf(&b, "{ %s\n} >\"$WALK_OUT/%d.out\" 2>&1 </dev/null\n", c.Text, n)
			fmt.Fprintf(&b, "__rc=$?; echo $__rc >\"$WALK_OUT/%d.rc\"\n", n)
			if c.ExpectsFailure() {
				fmt.Fprintf(&b, "if [ $__rc = 0 ]; then echo \"walkthrough: %s:%d succeeded; the guide shows it failing\" >&2; exit 1; fi\n", c.Doc, c.Line)
			} else {
				fmt.Fprintf(&b, "if [ $__rc != 0 ]; then echo \"walkthrough: %s:%d failed (exit $__rc)\" >&2; exit 1; fi\n", c.Doc, c.Line)
			}
			n++
		}
	}
	b.WriteString("\necho walkthrough: done\n")
	return b.String()
}

// Commands lists the commands Script runs, in its numbering.
func Commands(blocks []Block) []Command {
	var out []Command
	for _, bl := range blocks {
		if bl.Skip == "" {
			out = append(out, bl.Commands...)
		}
	}
	return out
}

// Match checks output against the lines the guide shows: each expected
// line matches one line, "…" in it standing for any text; an expected
// line that is only "…" matches any number of lines. Trailing empty lines
// are ignored on both sides.
func Match(expect []string, output []byte) error {
	got := splitLines(output)
	for len(expect) > 0 && expect[len(expect)-1] == "" {
		expect = expect[:len(expect)-1]
	}
	pats := make([]*regexp.Regexp, len(expect))
	for i, e := range expect {
		if e == "…" {
			continue
		}
		parts := strings.Split(e, "…")
		for j, p := range parts {
			parts[j] = regexp.QuoteMeta(p)
		}
		pats[i] = regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
	}
	if match(pats, got) {
		return nil
	}
	var b strings.Builder
	b.WriteString("the output does not match the guide.\n--- the guide shows\n")
	for _, e := range expect {
		fmt.Fprintf(&b, "%s\n", e)
	}
	b.WriteString("--- the command printed\n")
	for _, g := range got {
		fmt.Fprintf(&b, "%s\n", g)
	}
	return fmt.Errorf("%s", b.String())
}

// match is a backtracking match of patterns (nil: any lines) against lines.
func match(pats []*regexp.Regexp, lines []string) bool {
	if len(pats) == 0 {
		return len(lines) == 0
	}
	if pats[0] == nil {
		for k := 0; k <= len(lines); k++ {
			if match(pats[1:], lines[k:]) {
				return true
			}
		}
		return false
	}
	return len(lines) > 0 && pats[0].MatchString(lines[0]) && match(pats[1:], lines[1:])
}

func splitLines(b []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		out = append(out, strings.TrimRight(sc.Text(), " \r"))
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

// Status reads the exit status the script recorded for a command.
func Status(rc []byte) (int, error) {
	return strconv.Atoi(strings.TrimSpace(string(rc)))
}
