// Package corpus finds, for tests and benchmarks, the conformance corpus:
// the attestation evidence and WASI programs written by others that the
// project is tested against, kept in the repository under
// testdata/conformance with their licences (see its README). Nothing
// outside the repository is read.
package corpus

import (
	"os"
	"path/filepath"
	"testing"
)

// ModuleRoot returns the module's root directory (where go.mod is), above
// the working directory, failing the test if there is none.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Dir returns the corpus directory, failing the test when it is missing.
func Dir(t testing.TB) string {
	t.Helper()
	c := filepath.Join(ModuleRoot(t), "testdata", "conformance")
	if _, err := os.Stat(c); err != nil {
		t.Fatalf("the conformance corpus is missing from the repository (%v)", err)
	}
	return c
}

// Path returns the path of rel (slash-separated) in the corpus.
func Path(t testing.TB, rel string) string {
	t.Helper()
	return filepath.Join(Dir(t), filepath.FromSlash(rel))
}

// Read returns the content of rel in the corpus.
func Read(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(Path(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
