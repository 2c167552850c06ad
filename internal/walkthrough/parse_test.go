package walkthrough

import (
	"strings"
	"testing"
)

const sample = "# Guide\n\n```sh\n" +
	"./cloister key new --out a.key\n" +
	"./cloister ledger append --key a.key \\\n    --body '{}'\n" +
	"# 0\n" +
	"\n# a comment, not output\n" +
	"cat > p.json <<EOF\n{\"x\": 1}\n# not output: inside the document\nEOF\n" +
	"./cloister session upload --key bob.key\n" +
	"# cloister: upload \"x\" as \"bob\": already_exists: …\n" +
	"```\n\n```json\n{\"not\": \"run\"}\n```\n\n" +
	"<!-- walkthrough: skip needs a TPM -->\n```sh\nswtpm socket &\n```\n"

func TestParse(t *testing.T) {
	blocks, err := Parse("g.md", []byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 2 || blocks[1].Skip != "needs a TPM" || blocks[0].Skip != "" {
		t.Fatalf("blocks %+v", blocks)
	}
	c := blocks[0].Commands
	if len(c) != 4 {
		t.Fatalf("commands %+v", c)
	}
	if c[0].Expect != nil || c[0].Line != 4 {
		t.Errorf("command 0 %+v", c[0])
	}
	if c[1].Text != "./cloister ledger append --key a.key \\\n    --body '{}'" || len(c[1].Expect) != 1 || c[1].Expect[0] != "0" || c[1].ExpectsFailure() {
		t.Errorf("command 1 %+v", c[1])
	}
	if !strings.HasSuffix(c[2].Text, "# not output: inside the document\nEOF") || c[2].Expect != nil {
		t.Errorf("here-document %+v", c[2])
	}
	if !c[3].ExpectsFailure() {
		t.Errorf("command 3 should fail: %+v", c[3])
	}
	if got := len(Commands(blocks)); got != 4 {
		t.Errorf("Commands: %d, want the 4 of the block that is run", got)
	}
	s := Script(blocks)
	for _, want := range []string{"# g.md:4\n{ ./cloister key new --out a.key\n}", "not run: needs a TPM", "if [ $__rc = 0 ]; then echo \"walkthrough: g.md:14 succeeded"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	if _, err := Parse("g.md", []byte("```sh\ncat <<EOF\nno end\n```\n")); err == nil {
		t.Error("an unterminated here-document was accepted")
	}
	if _, err := Parse("g.md", []byte("<!-- walkthrough: skip -->\n```sh\nx\n```\n")); err == nil {
		t.Error("a skip without a reason was accepted")
	}
}

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		expect []string
		out    string
		ok     bool
	}{
		{[]string{"0"}, "0\n", true},
		{[]string{"0"}, "1\n", false},
		{[]string{"0"}, "0\nmore\n", false},
		{[]string{"verified …: size …", "…", "state: st.json"}, "verified x: size 3\n  a\n  b\nstate: st.json\n", true},
		{[]string{"verified …: size …", "…", "state: st.json"}, "verified x: size 3\nstate: st.json\n", true},
		{[]string{"a", "…"}, "a\n", true},
		{[]string{"{", "  \"sum\": 1", "}"}, "{\n  \"sum\": 1\n}\n\n", true},
		{[]string{"a.b"}, "axb\n", false}, // only "…" is a wildcard
		{nil, "", true},
	} {
		if err := Match(c.expect, []byte(c.out)); (err == nil) != c.ok {
			t.Errorf("Match(%q, %q) = %v, want ok=%v", c.expect, c.out, err, c.ok)
		}
	}
}
