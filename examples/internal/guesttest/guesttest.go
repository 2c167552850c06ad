// Package guesttest lays out a guest root on the host file system (input/
// and output/ under a temporary directory, as package guest expects when
// CLOISTER_GUEST_ROOT is set) so that example programs can be tested
// natively. It is for tests only.
package guesttest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cloisterhq/cloister/guest"
)

// Root creates a guest root holding inputs (a name DIR/FILE in a
// directory), points CLOISTER_GUEST_ROOT at
// it for the rest of the test and returns its path.
func Root(t testing.TB, inputs map[string][]byte) string {
	t.Helper()
	r := t.TempDir()
	for _, d := range []string{"input", "output"} {
		if err := os.Mkdir(filepath.Join(r, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for n, c := range inputs {
		// A name DIR/FILE is a file of a directory input.
		p := filepath.Join(r, "input", n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, c, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(guest.RootEnv, r)
	return r
}

// Output returns the content of output name under root, failing the test
// if it is missing.
func Output(t testing.TB, root, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "output", name))
	if err != nil {
		t.Fatalf("output %q: %v", name, err)
	}
	return b
}

// Testdata reads testdata/name of the package under test.
func Testdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
