package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// TempGlob matches, in a directory, the temporary files WriteFile creates
// there. A crash between creating one and renaming it leaves it behind
// (never the file it was to replace); a program that owns the directory
// may remove matches at start.
const TempGlob = ".tmp-*"

// Option changes how WriteFile writes.
type Option func(*options)

type options struct {
	noSync    bool
	noReplace bool
}

// NoSync skips both fsyncs: the write stays atomic (old or new content,
// never a mix) but may be lost in a crash. Only for callers whose user
// explicitly traded durability for speed.
func NoSync() Option { return func(o *options) { o.noSync = true } }

// NoReplace makes WriteFile fail, with an error wrapping fs.ErrExist,
// when path exists, instead of replacing it; the check and the creation
// are one step (a hard link), so two writers racing for a new name never
// both succeed.
func NoReplace() Option { return func(o *options) { o.noReplace = true } }

// WriteFile writes data to path with permission bits perm (applied
// exactly, whatever the umask). It writes a temporary file beside path,
// fsyncs it, renames it over path and fsyncs the directory. On any error
// the temporary file is removed and path is as it was, except that after
// a failed directory sync the rename may or may not have reached the disk.
// Errors are *fs.PathError naming path.
func WriteFile(path string, data []byte, perm fs.FileMode, opts ...Option) error {
	var o options
	for _, f := range opts {
		f(&o)
	}
	if err := write(path, data, perm, o); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Path == path {
			return err
		}
		return &fs.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

func write(path string, data []byte, perm fs.FileMode, o options) error {
	dir := filepath.Dir(path)
	if o.noReplace {
		// Fail early, before writing anything; the link below decides.
		if _, err := os.Lstat(path); err == nil {
			return fs.ErrExist
		}
	}
	tmp, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	placed := false
	defer func() {
		if !placed || o.noReplace {
			// After a link the temporary name is a second name of the
			// file; after a rename it no longer exists.
			os.Remove(name)
		}
	}()
	err = tmp.Chmod(perm)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil && !o.noSync {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if o.noReplace {
		if err := os.Link(name, path); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fs.ErrExist
			}
			return err
		}
	} else if err := os.Rename(name, path); err != nil {
		return err
	}
	placed = true
	if o.noSync {
		return nil
	}
	if err := SyncDir(dir); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// SyncDir fsyncs directory dir, making the creation, renaming or removal
// of names in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
