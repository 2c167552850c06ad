package console

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The verifier script's hash is published in docs/console.md, so that a
// viewer can pin it: the published hash is the script's.
func TestVerifierHashPublished(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "docs", "console.md"))
	if err != nil {
		t.Fatal(err)
	}
	want := "`verify.js` SHA-256: `" + VerifierScriptSHA256() + "`"
	if !strings.Contains(string(b), want) {
		t.Fatalf("docs/console.md does not publish the verifier's hash: want the line\n%s\n(update it when console/static/verify.js changes)", want)
	}
}

// The console's line on what each isolate class protects is the README's,
// word for word.
func TestClassLinesAreTheReadmes(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z-]+)` \\| [^|]* \\| ([^|]*) \\| ([^|]*) \\|")
	seen := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		l, ok := classProtects[m[1]]
		if !ok {
			continue
		}
		seen[m[1]] = true
		others, operator := strings.ReplaceAll(m[2], "**", ""), strings.ReplaceAll(m[3], "**", "")
		if l.Others != others || l.Operator != operator {
			t.Errorf("class %s: the console says\n  %q / %q\nthe README says\n  %q / %q", m[1], l.Others, l.Operator, others, operator)
		}
	}
	for c := range classProtects {
		if !seen[c] {
			t.Errorf("class %s: no row in the README's table", c)
		}
	}
}
