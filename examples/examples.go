// Package examples holds Cloister's example guest programs, prebuilt as
// WASI preview-1 modules and embedded here with their sample inputs and the
// outputs those inputs must produce, so that commands such as
// `cloister demo` can run them without a Go toolchain for wasip1.
//
// The programs themselves are the main packages in the subdirectories
// (wordcount, sha256sum, linreg, psi-sum, shamir, hostcall, hospital,
// fedlogreg); examples/build.sh
// rebuilds every NAME/NAME.wasm reproducibly and a test checks that the
// committed modules are exactly what the source builds to. This package is
// not a library for guests (see package guest) and runs nothing itself.
package examples

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
)

//go:embed */*.wasm */testdata
var files embed.FS

// Names lists the examples, sorted.
var Names = []string{"fedlogreg", "hospital", "hostcall", "linreg", "psi-sum", "sha256sum", "shamir", "wordcount"}

// File is a named byte string: a sample input or an expected output.
type File struct {
	Name string
	Data []byte
}

// Program is one example with its sample run.
type Program struct {
	Name string // directory name, e.g. "psi-sum"
	Wasm []byte // the prebuilt module
	// Inputs are the sample inputs (shown to the guest as /input/NAME).
	Inputs []File
	// Outputs are the files the program writes under /output/ for Inputs,
	// byte for byte.
	Outputs []File
	// Stdout is what the program prints for Inputs.
	Stdout []byte
}

// Lookup returns the example called name, with fresh copies of its bytes
// (callers may modify them).
func Lookup(name string) (*Program, error) {
	if !slices.Contains(Names, name) {
		return nil, fmt.Errorf("examples: no example called %q (have %v)", name, Names)
	}
	p := &Program{Name: name}
	var err error
	if p.Wasm, err = files.ReadFile(path.Join(name, name+".wasm")); err != nil {
		return nil, err
	}
	if p.Inputs, err = readDir(path.Join(name, "testdata", "input")); err != nil {
		return nil, err
	}
	// A program whose run needs other nodes (fedlogreg) has a sample
	// input but no recorded run.
	if p.Outputs, err = readDir(path.Join(name, "testdata", "output")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if p.Stdout, err = files.ReadFile(path.Join(name, "testdata", "stdout")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return p, nil
}

func readDir(dir string) ([]File, error) {
	entries, err := fs.ReadDir(files, dir)
	if err != nil {
		return nil, err
	}
	out := make([]File, 0, len(entries))
	for _, e := range entries {
		b, err := files.ReadFile(path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, File{Name: e.Name(), Data: b})
	}
	return out, nil
}

// mustWasm returns an embedded module; the embed pattern guarantees it
// exists, and a test checks every name.
func mustWasm(name string) []byte {
	b, err := files.ReadFile(path.Join(name, name+".wasm"))
	if err != nil {
		panic("examples: embedded module missing: " + err.Error())
	}
	return b
}

// PSISum returns the private set intersection sum module: inputs
// customers.csv ("id" per line) and purchases.csv ("id,amount" per line),
// output result.json {"intersection_size": N, "sum": S}. See
// examples/psi-sum/main.go for the exact format. Lookup("psi-sum") gives
// the sample inputs.
func PSISum() []byte { return mustWasm("psi-sum") }

// Shamir returns the secret-sharing reconstruction module: each input is one
// share (x byte, then y bytes) over GF(2^8)/0x11B; output secret.
func Shamir() []byte { return mustWasm("shamir") }

// WordCount returns the line/word/byte counting module: input text, output
// count.json.
func WordCount() []byte { return mustWasm("wordcount") }

// SHA256Sum returns the hashing module: every input, output sha256.json.
func SHA256Sum() []byte { return mustWasm("sha256sum") }

// LinReg returns the least-squares module: input data.csv ("x,y" lines),
// output linreg.json.
func LinReg() []byte { return mustWasm("linreg") }
