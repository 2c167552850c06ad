package cli

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// find returns the command at path ("ledger verify") under root.
func find(t *testing.T, root *cobra.Command, path string) *cobra.Command {
	t.Helper()
	c, rest, err := root.Find(strings.Fields(path))
	if err != nil || len(rest) != 0 {
		t.Fatalf("no command %q: %v (left %v)", path, err, rest)
	}
	return c
}

// TestNewRootIsFresh: each newRoot is a tree of its own, so a flag set in
// one execution never leaks into the next.
func TestNewRootIsFresh(t *testing.T) {
	t.Parallel()
	a, b := newRoot(), newRoot()
	if err := find(t, a, "run").Flags().Set("memory", "1GiB"); err != nil {
		t.Fatal(err)
	}
	if got := find(t, b, "run").Flags().Lookup("memory").Value.String(); got != "256MiB" {
		t.Errorf("a second tree's run --memory is %q after setting it in the first", got)
	}
	if find(t, a, "ledger verify") == find(t, b, "ledger verify") {
		t.Error("two trees share a command")
	}
}

// TestNoCommandGlobals: the package declares no package-level command and
// no init function; commands come from constructors that newRoot calls.
func TestNoCommandGlobals(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Name.Name == "init" && d.Recv == nil {
					t.Errorf("%s: func init: build commands in a constructor newRoot calls", fset.Position(d.Pos()))
				}
			case *ast.GenDecl:
				if d.Tok != token.VAR {
					continue
				}
				for _, sp := range d.Specs {
					for _, v := range sp.(*ast.ValueSpec).Values {
						if u, ok := v.(*ast.UnaryExpr); ok {
							if cl, ok := u.X.(*ast.CompositeLit); ok {
								if sel, ok := cl.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "Command" {
									t.Errorf("%s: package-level cobra command", fset.Position(v.Pos()))
								}
							}
						}
					}
				}
			}
		}
	}
}

// TestCommandsAndFlagsKept: every command and flag of
// testdata/commands.txt still exists (names are a contract with scripts;
// new ones may be added), and every command has --help text with an
// example.
func TestCommandsAndFlagsKept(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("testdata", "commands.txt"))
	if err != nil {
		t.Fatal(err)
	}
	root := newRoot()
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var path, flags []string
		for _, w := range strings.Fields(line) {
			if strings.HasPrefix(w, "--") {
				flags = append(flags, w)
			} else {
				path = append(path, w)
			}
		}
		c := root
		if len(path) > 1 {
			c = find(t, root, strings.Join(path[1:], " "))
		}
		for _, fl := range flags {
			name, short, _ := strings.Cut(strings.TrimPrefix(fl, "--"), "/-")
			f := c.Flags().Lookup(name)
			if f == nil {
				t.Errorf("%s: flag --%s is gone", c.CommandPath(), name)
			} else if f.Shorthand != short {
				t.Errorf("%s --%s: shorthand %q, was %q", c.CommandPath(), name, f.Shorthand, short)
			}
		}
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() == "help" || c.Name() == "completion" {
			return
		}
		if c.Short == "" || c.Example == "" {
			t.Errorf("%s: no short help or no example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// TestJSONOutputIsTyped: --json output of a refused check is the typed
// failedJSON, the same shape from every command.
func TestJSONOutputIsTyped(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "ev.json")
	if err := os.WriteFile(bad, []byte(`{"class":"software","data":"AA=="}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ := runCLI(t, "attest", "verify", bad, "--json")
	if code == 0 {
		t.Fatalf("garbage evidence verified")
	}
	var got failedJSON
	dec := json.NewDecoder(bytes.NewReader([]byte(stdout)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil || got.Verified || got.Error == "" {
		t.Fatalf("attest verify --json printed %q (%v), want {verified:false,error:…}", stdout, err)
	}
}
