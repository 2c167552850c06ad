package layout

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/cloisterhq/cloister"

// root is the module's root directory.
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("module root not found at %s: %v", dir, err)
	}
	return dir
}

// goFile is one parsed Go file of the module.
type goFile struct {
	rel  string // slash-separated, from the module root
	test bool
	ast  *ast.File
}

// goFiles parses every Go file of the module except those under testdata
// directories and other modules (deploy/ has its own go.mod).
func goFiles(t *testing.T) []goFile {
	t.Helper()
	base := root(t)
	var out []goFile
	fset := token.NewFileSet()
	err := filepath.WalkDir(base, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != base && (name == "testdata" || strings.HasPrefix(name, ".") || name == "node_modules") {
				return filepath.SkipDir
			}
			if path != base {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(base, path)
		out = append(out, goFile{rel: filepath.ToSlash(rel), test: strings.HasSuffix(path, "_test.go"), ast: f})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 100 {
		t.Fatalf("found only %d Go files under %s", len(out), base)
	}
	return out
}

// calls returns "pkg.Func" for each call of a package-level function of
// an imported package in f, with the file position.
func calls(fset *token.FileSet, f *ast.File) map[string][]string {
	imports := map[string]string{} // local name -> import path
	for _, im := range f.Imports {
		p, _ := strconv.Unquote(im.Path.Value)
		name := filepath.Base(p)
		if im.Name != nil {
			name = im.Name.Name
		}
		imports[name] = p
	}
	out := map[string][]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		id, ok := sel.X.(*ast.Ident)
		if !ok {
			return true
		}
		if p, ok := imports[id.Name]; ok {
			out[p+"."+sel.Sel.Name] = append(out[p+"."+sel.Sel.Name], "")
		}
		return true
	})
	return out
}

// TestOneAtomicWriter: whole files are put in place only through
// internal/atomicfile (temporary file, fsync, rename, directory fsync).
// A rename or a hard link anywhere else is a second writer with its own
// durability. (A temporary file that is never given a name, a scratch
// area, is not a writer of files and is allowed.)
func TestOneAtomicWriter(t *testing.T) {
	t.Parallel()
	for _, f := range goFiles(t) {
		if f.test || strings.HasPrefix(f.rel, "internal/atomicfile/") {
			continue
		}
		for _, fn := range []string{"os.Rename", "os.Link"} {
			if n := len(calls(nil, f.ast)[fn]); n > 0 {
				t.Errorf("%s calls %s %d times: write whole files with internal/atomicfile", f.rel, fn, n)
			}
		}
	}
}

// TestOneKeyPrefix: the text form of Ed25519 keys is written and read by
// api/protocol alone; a string literal starting "ed25519:" elsewhere is a
// second parser or formatter in the making.
func TestOneKeyPrefix(t *testing.T) {
	t.Parallel()
	for _, f := range goFiles(t) {
		if f.test || f.rel == "api/protocol/keys.go" {
			continue
		}
		ast.Inspect(f.ast, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			if s, err := strconv.Unquote(lit.Value); err == nil && strings.HasPrefix(s, "ed25519:") {
				t.Errorf("%s: string literal %q: use protocol.Ed25519KeyPrefix, FormatEd25519Key or ParseEd25519Key", f.rel, s)
			}
			return true
		})
	}
}

// TestOneSizeParser: sizes people write are parsed by internal/bytesize
// alone; no other package declares a size parser.
func TestOneSizeParser(t *testing.T) {
	t.Parallel()
	for _, f := range goFiles(t) {
		if f.test || strings.HasPrefix(f.rel, "internal/bytesize/") {
			continue
		}
		for _, d := range f.ast.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if ok && strings.EqualFold(fd.Name.Name, "parseSize") {
				t.Errorf("%s declares %s: parse sizes with internal/bytesize", f.rel, fd.Name.Name)
			}
		}
	}
}

// deps lists the packages pkgs depend on (go list -deps).
func deps(t *testing.T, pkgs ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...)
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %v: %v", pkgs, err)
	}
	return strings.Fields(string(out))
}

// TestImportDirections: a server never imports the session client (the
// byte strings both compute live in api/protocol), the ledger never
// imports its own client, and policy, which clients import, does not pull
// in the isolate runtime. A node does read other parties' ledgers as a
// client — the grants of a sealed program, through the broker package — and
// does so through ledger/client, which checks what it reads (decision 0103).
func TestImportDirections(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		pkg       string
		forbidden []string
	}{
		{"node", []string{"client"}},
		{"ledger", []string{"client", "ledger/client"}},
		{"policy", []string{"isolate", "node", "ledger"}},
		{"api/protocol", []string{"client", "node", "ledger", "policy", "keys", "attest"}},
	} {
		for _, d := range deps(t, module+"/"+c.pkg) {
			for _, f := range c.forbidden {
				if d == module+"/"+f || strings.HasPrefix(d, module+"/"+f+"/") {
					t.Errorf("%s depends on %s", c.pkg, d)
				}
			}
		}
	}
}

// TestSelfContained: no Go file, test or not, names a path beside the
// repository; tests read what they need from testdata/ (the conformance
// corpus is testdata/conformance), so a clone alone passes its tests.
func TestSelfContained(t *testing.T) {
	t.Parallel()
	for _, f := range goFiles(t) {
		if f.rel == "internal/layout/layout_test.go" {
			continue // the test's own patterns
		}
		ast.Inspect(f.ast, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err == nil && (strings.Contains(s, "../shared") || strings.Contains(s, "shared/conformance")) {
				t.Errorf("%s: string literal %q names a directory outside the repository", f.rel, s)
			}
			return true
		})
	}
}

// TestVerifiersLinkNoConsensus: the packages a sceptic imports to check
// the ledger — the verifier, and the HTTP client built on it — link no
// consensus engine and not the ledger's state machine.
func TestVerifiersLinkNoConsensus(t *testing.T) {
	t.Parallel()
	for _, pkg := range []string{"ledger/verify", "ledger/client"} {
		for _, d := range deps(t, module+"/"+pkg) {
			if strings.Contains(d, "cometbft") || d == module+"/ledger" {
				t.Errorf("%s depends on %s", pkg, d)
			}
		}
	}
}

// importsOf returns the import paths of f.
func importsOf(f goFile) []string {
	var out []string
	for _, im := range f.ast.Imports {
		if p, err := strconv.Unquote(im.Path.Value); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// TestOneCanonicalJSON: RFC 8785 is implemented once, in jcs. An
// implementation orders object members by their UTF-16 code units, so a
// package outside jcs that imports unicode/utf16, or declares a function
// named canonicalize, is a second canonical form in the making (the
// ledger once had one that disagreed with the policy's on lone
// surrogates). The packages whose bytes are signed or hashed use jcs.
func TestOneCanonicalJSON(t *testing.T) {
	t.Parallel()
	users := map[string]bool{}
	for _, f := range goFiles(t) {
		if f.test || strings.HasPrefix(f.rel, "jcs/") {
			continue
		}
		for _, p := range importsOf(f) {
			if p == "unicode/utf16" {
				t.Errorf("%s imports unicode/utf16: canonical JSON is jcs's alone", f.rel)
			}
			if p == module+"/jcs" {
				users[pathDir(f.rel)] = true
			}
		}
		for _, d := range f.ast.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && strings.Contains(strings.ToLower(fd.Name.Name), "canonicali") {
				t.Errorf("%s declares %s: canonicalise with jcs.Canonicalize", f.rel, fd.Name.Name)
			}
		}
	}
	// Policies (their hash), ledger entries (their signatures), result
	// commitments and admission tokens: each is one form, jcs's.
	for _, dir := range []string{"policy", "ledger/verify", "api/protocol", "node"} {
		if !users[dir] {
			t.Errorf("%s does not use jcs: where does its canonical form come from?", dir)
		}
	}
}

// TestOneCheckpointVerifier: signed checkpoints are opened, and their
// quorum judged, by ledger/verify alone. Outside it, no code opens a
// signed note (note.Open) or declares a quorum rule; the state machine,
// the ledger client and the command line import ledger/verify.
func TestOneCheckpointVerifier(t *testing.T) {
	t.Parallel()
	users := map[string]bool{}
	for _, f := range goFiles(t) {
		if f.test || strings.HasPrefix(f.rel, "ledger/verify/") {
			continue
		}
		if n := len(calls(nil, f.ast)["golang.org/x/mod/sumdb/note.Open"]); n > 0 {
			t.Errorf("%s calls note.Open: verify checkpoints with verify.OpenCheckpoint", f.rel)
		}
		for _, d := range f.ast.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && strings.EqualFold(fd.Name.Name, "quorum") {
				t.Errorf("%s declares %s: the quorum rule is verify.Quorum", f.rel, fd.Name.Name)
			}
		}
		for _, p := range importsOf(f) {
			if p == module+"/ledger/verify" {
				users[pathDir(f.rel)] = true
			}
		}
	}
	for _, dir := range []string{"ledger", "ledger/client", "internal/cli"} {
		if !users[dir] {
			t.Errorf("%s does not import ledger/verify", dir)
		}
	}
}

// pathDir is the slash-separated directory of a module-relative path.
func pathDir(rel string) string {
	if i := strings.LastIndex(rel, "/"); i >= 0 {
		return rel[:i]
	}
	return "."
}
