package isolate

import (
	"fmt"
	"sort"
	"strings"
)

// Directory inputs. An input named "DIR/FILE" is the file FILE of the
// read-only directory /input/DIR, which holds exactly the inputs named
// "DIR/…" (a pinned directory the node fetched: docs/storage.md). One
// level only: /input/DIR/FILE is a file. Each file is an input like any
// other — its own descriptor, read with pread — so directories change
// neither the job's wire form nor the worker: the guest file system builds
// the tree from the names.

// MaxInputFiles is the most input files one run takes, the files of
// directory inputs included: each is a descriptor sent with the job.
const MaxInputFiles = maxJobFiles - 1

// validateInputPath accepts an input name: NAME, or DIR/NAME for a file
// of a directory input, each part a plain name (ValidateInputName).
func validateInputPath(name string) error {
	dir, file, ok := strings.Cut(name, "/")
	if !ok {
		return ValidateInputName(name)
	}
	if err := ValidateInputName(dir); err != nil {
		return fmt.Errorf("directory of input %q: %w", name, err)
	}
	if err := ValidateInputName(file); err != nil {
		return fmt.Errorf("input %q in directory %q: %w", file, dir, err)
	}
	return nil
}

// inputDirs returns the directories the input names make, each with its
// file names sorted, and refuses a name that is both a file and a
// directory.
func inputDirs(names []string) (map[string][]string, error) {
	dirs := map[string][]string{}
	for _, n := range names {
		if dir, file, ok := strings.Cut(n, "/"); ok {
			dirs[dir] = append(dirs[dir], file)
		}
	}
	for _, n := range names {
		if _, ok := dirs[n]; ok {
			return nil, fmt.Errorf("input %q is both a file and a directory", n)
		}
	}
	for _, files := range dirs {
		sort.Strings(files)
	}
	return dirs, nil
}
