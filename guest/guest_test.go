package guest

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// newRoot makes a guest root with the given inputs and points the package
// at it.
func newRoot(t *testing.T, inputs map[string]string) string {
	t.Helper()
	r := t.TempDir()
	for _, d := range []string{"input", "output"} {
		if err := os.Mkdir(filepath.Join(r, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for n, c := range inputs {
		if err := os.WriteFile(filepath.Join(r, "input", n), []byte(c), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(RootEnv, r)
	return r
}

func TestValidateName(t *testing.T) {
	good := []string{"a", "a.csv", "a..b", "...", "report.json", strings.Repeat("x", MaxNameLen)}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", n, err)
		}
	}
	bad := []string{"", ".", "..", "a/b", "/etc", "../x", `a\b`, "a\x00b", strings.Repeat("x", MaxNameLen+1)}
	for _, n := range bad {
		if err := ValidateName(n); !errors.Is(err, ErrBadName) {
			t.Errorf("ValidateName(%q) = %v, want ErrBadName", n, err)
		}
	}
}

func TestReadInputAndList(t *testing.T) {
	newRoot(t, map[string]string{"b.txt": "bee", "a.csv": "1,2\n"})
	got, err := ReadInput("a.csv")
	if err != nil || string(got) != "1,2\n" {
		t.Fatalf("ReadInput = %q, %v", got, err)
	}
	names, err := Inputs()
	if err != nil || !reflect.DeepEqual(names, []string{"a.csv", "b.txt"}) {
		t.Fatalf("Inputs = %v, %v", names, err)
	}
	f, err := OpenInput("b.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if b, _ := io.ReadAll(f); string(b) != "bee" {
		t.Fatalf("OpenInput content = %q", b)
	}
	if _, err := ReadInput("missing"); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), `input "missing"`) {
		t.Fatalf("missing input error = %v", err)
	}
}

// A name that tries to leave /input is refused before any file is touched,
// even when the target exists.
func TestTraversalRefused(t *testing.T) {
	r := newRoot(t, nil)
	if err := os.WriteFile(filepath.Join(r, "secret"), []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"../secret", "..", "sub/../../secret"} {
		if _, err := ReadInput(n); !errors.Is(err, ErrBadName) {
			t.Errorf("ReadInput(%q) = %v, want ErrBadName", n, err)
		}
		if err := WriteOutput(n, []byte("x")); !errors.Is(err, ErrBadName) {
			t.Errorf("WriteOutput(%q) = %v, want ErrBadName", n, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(r, "secret")); string(b) != "s" {
		t.Fatalf("file outside output changed: %q", b)
	}
}

func TestWriteOutputReplaces(t *testing.T) {
	r := newRoot(t, nil)
	if err := WriteOutput("r.txt", []byte("first, longer")); err != nil {
		t.Fatal(err)
	}
	if err := WriteOutput("r.txt", []byte("second")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(r, "output", "r.txt")); string(b) != "second" {
		t.Fatalf("output = %q, want %q", b, "second")
	}
}

func TestJSONRoundTrip(t *testing.T) {
	r := newRoot(t, map[string]string{
		"ok.json":      `{"name":"x","n":3}`,
		"extra.json":   `{"name":"x","n":3,"nmae":"typo"}`,
		"twice.json":   `{"name":"x","n":3} {}`,
		"broken.json":  `{"name":`,
		"spaces.json":  " {\"n\": 1}\n\n",
		"wrongty.json": `{"n":"three"}`,
	})
	type doc struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	var d doc
	if err := ReadJSON("ok.json", &d); err != nil || d != (doc{"x", 3}) {
		t.Fatalf("ReadJSON ok = %+v, %v", d, err)
	}
	if err := ReadJSON("spaces.json", &d); err != nil || d.N != 1 {
		t.Fatalf("ReadJSON spaces = %+v, %v", d, err)
	}
	for name, want := range map[string]string{
		"extra.json":   `unknown field "nmae"`,
		"twice.json":   "data after the first value",
		"broken.json":  "unexpected EOF",
		"wrongty.json": "cannot unmarshal string",
	} {
		err := ReadJSON(name, &d)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), name) {
			t.Errorf("ReadJSON(%s) = %v, want error containing %q", name, err, want)
		}
	}
	if err := WriteJSON("out.json", doc{"y", 7}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(r, "output", "out.json"))
	if want := "{\n  \"name\": \"y\",\n  \"n\": 7\n}\n"; string(got) != want {
		t.Fatalf("WriteJSON wrote %q, want %q", got, want)
	}
	if err := WriteJSON("bad.json", func() {}); err == nil || !strings.Contains(err.Error(), "encoding JSON") {
		t.Fatalf("WriteJSON(func) = %v", err)
	}
	if _, err := os.Stat(filepath.Join(r, "output", "bad.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed WriteJSON left a file behind: %v", err)
	}
}

func TestNoRootNatively(t *testing.T) {
	t.Setenv(RootEnv, "")
	if _, err := ReadInput("a"); !errors.Is(err, ErrNoRoot) {
		t.Fatalf("ReadInput without root = %v, want ErrNoRoot", err)
	}
	if err := WriteOutput("a", nil); !errors.Is(err, ErrNoRoot) {
		t.Fatalf("WriteOutput without root = %v, want ErrNoRoot", err)
	}
	if _, err := Inputs(); !errors.Is(err, ErrNoRoot) {
		t.Fatalf("Inputs without root = %v, want ErrNoRoot", err)
	}
}

func TestFail(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	oldStderr, oldExit := os.Stderr, exit
	defer func() { os.Stderr, exit = oldStderr, oldExit }()
	code := -1
	os.Stderr = w
	exit = func(c int) { code = c }
	Fail("bad row %d in %s", 3, "a.csv")
	w.Close()
	got, _ := io.ReadAll(r)
	if code != 1 || string(got) != "bad row 3 in a.csv\n" {
		t.Fatalf("Fail: exit %d, stderr %q", code, got)
	}
}

// FuzzValidateName checks that every accepted name is a direct child of the
// directory it is joined to, so no accepted name can reach outside /input or
// /output.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"a.csv", "..", "../x", "a/b", "", ".", "a\x00", `..\x`, "...."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateName(name) != nil {
			return
		}
		dir := "/input"
		p := filepath.Join(dir, name)
		if filepath.Dir(p) != dir || filepath.Base(p) != name {
			t.Fatalf("accepted %q joins to %q, outside %s", name, p, dir)
		}
	})
}
