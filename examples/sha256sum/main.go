// Command sha256sum hashes every input with SHA-256, and every file of a
// directory input (a pinned directory, /input/DIR/FILE) as "DIR/FILE". It
// writes /output/sha256.json, a list of {"name", "bytes", "sha256"} sorted
// by name, and prints one "HEX  NAME" line per file, the format
// sha256sum(1) prints and `sha256sum -c` checks.
//
//	cloister run --input a=a.bin --input b=b.bin --output-dir out examples/sha256sum/sha256sum.wasm
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/cloisterhq/cloister/guest"
)

// Digest is one entry of sha256.json.
type Digest struct {
	Name   string `json:"name"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

func main() {
	if err := run(); err != nil {
		guest.Fail("sha256sum: %v", err)
	}
}

func run() error {
	names, err := inputFiles()
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return errors.New("no inputs to hash")
	}
	digests := make([]Digest, 0, len(names))
	for _, n := range names {
		d, err := hashInput(n)
		if err != nil {
			return err
		}
		digests = append(digests, d)
	}
	if err := guest.WriteJSON("sha256.json", digests); err != nil {
		return err
	}
	for _, d := range digests {
		if _, err := fmt.Printf("%s  %s\n", d.SHA256, d.Name); err != nil {
			return err
		}
	}
	return nil
}

// inputFiles lists the inputs, sorted: each file, and each file of a
// directory input as DIR/FILE.
func inputFiles() ([]string, error) {
	dir, err := guest.InputDir()
	if err != nil {
		return nil, err
	}
	top, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing inputs: %w", err)
	}
	var names []string
	for _, e := range top {
		if !e.IsDir() {
			names = append(names, e.Name())
			continue
		}
		files, err := os.ReadDir(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("listing directory input %q: %w", e.Name(), err)
		}
		for _, f := range files {
			names = append(names, e.Name()+"/"+f.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

func hashInput(name string) (Digest, error) {
	dir, err := guest.InputDir()
	if err != nil {
		return Digest{}, err
	}
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return Digest{}, fmt.Errorf("input %q: %w", name, err)
	}
	defer f.Close()
	d, err := Hash(name, f)
	if err != nil {
		return Digest{}, fmt.Errorf("input %q: %w", name, err)
	}
	return d, nil
}

// Hash streams r through SHA-256.
func Hash(name string, r io.Reader) (Digest, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return Digest{}, err
	}
	return Digest{Name: name, Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}
