// Package streamfile writes a file that appears whole or not at all, from a
// stream too large to hold in memory: the bytes go to a temporary file in
// the destination's directory, which is synced and then renamed (or, when
// the destination must not exist yet, hard-linked) into place. A process
// killed at any point leaves either no file or the complete one, plus at
// worst a temporary ".NAME.tmp-*" file next to it.
package streamfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File is a destination being written. Call Commit to put it in place or
// Abort (always safe, also after Commit) to drop it.
type File struct {
	*os.File
	path      string
	noReplace bool
	done      bool
}

// Create starts writing path with permissions perm. With noReplace, Commit
// fails with an error wrapping os.ErrExist if path exists by then.
func Create(path string, perm os.FileMode, noReplace bool) (*File, error) {
	if noReplace {
		if _, err := os.Lstat(path); err == nil {
			return nil, fmt.Errorf("%s: %w", path, os.ErrExist)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, err
	}
	return &File{File: tmp, path: path, noReplace: noReplace}, nil
}

// Commit syncs the data and puts the file at its path.
func (f *File) Commit() error {
	if f.done {
		return errors.New("streamfile: already committed or aborted")
	}
	f.done = true
	tmp := f.File.Name()
	defer os.Remove(tmp)
	if err := f.File.Sync(); err != nil {
		f.File.Close()
		return fmt.Errorf("%s: syncing: %w", f.path, err)
	}
	if err := f.File.Close(); err != nil {
		return fmt.Errorf("%s: %w", f.path, err)
	}
	if f.noReplace {
		if err := os.Link(tmp, f.path); err != nil {
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s: %w", f.path, os.ErrExist)
			}
			return err
		}
	} else if err := os.Rename(tmp, f.path); err != nil {
		return err
	}
	syncDir(filepath.Dir(f.path))
	return nil
}

// Abort drops the file if it was not committed.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	os.Remove(f.File.Name())
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// WriteNew writes data to path with perm, whole or not at all, refusing to
// replace an existing file (the error wraps os.ErrExist).
func WriteNew(path string, data []byte, perm os.FileMode) error {
	f, err := Create(path, perm, true)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return err
	}
	return f.Commit()
}
