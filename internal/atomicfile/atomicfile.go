package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// TempGlob matches, in a directory, the temporary files WriteFile and
// Create make there. A crash between creating one and renaming it leaves
// it behind (never the file it was to replace); a program that owns the
// directory may remove matches at start.
const TempGlob = ".tmp-*"

// Option changes how WriteFile and Create write.
type Option func(*options)

type options struct {
	noSync    bool
	noReplace bool
	direct    bool
}

// NoSync skips both fsyncs: the write stays atomic (old or new content,
// never a mix) but may be lost in a crash. Only for callers whose user
// explicitly traded durability for speed.
func NoSync() Option { return func(o *options) { o.noSync = true } }

// NoReplace makes WriteFile (or Commit) fail, with an error wrapping
// fs.ErrExist, when path exists, instead of replacing it; the check and
// the creation are one step (a hard link), so two writers racing for a
// new name never both succeed.
func NoReplace() Option { return func(o *options) { o.noReplace = true } }

// WriteFile writes data to path with permission bits perm (applied
// exactly, whatever the umask). It writes a temporary file beside path,
// fsyncs it, renames it over path and fsyncs the directory. On any error
// the temporary file is removed and path is as it was, except that after
// a failed directory sync the rename may or may not have reached the disk.
// Errors are *fs.PathError naming path.
func WriteFile(path string, data []byte, perm fs.FileMode, opts ...Option) error {
	f, err := Create(path, perm, opts...)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return pathError(path, err)
	}
	return f.Commit()
}

// File is a whole file being written as a stream, for content too large
// to hold in memory: the bytes go to a temporary file beside the
// destination, and Commit puts it in place exactly as WriteFile does
// (fsync, rename or link, fsync of the directory). Until Commit returns,
// the destination is as it was; a crash at any point leaves either the old
// content or the complete new one, plus at worst a TempGlob file.
//
// Call Abort when giving up (it is safe at any time, also after Commit);
// a File is not safe for concurrent use, except that ReadAt and Sync may
// run at the same time (a check of what was written beside its fsync).
type File struct {
	f    *os.File
	path string
	o    options
	done bool
	d    *directState // with Direct, when the file system took O_DIRECT
	// placed: the content is at its path (Commit renamed or linked it),
	// whether or not the directory's fsync that followed succeeded.
	placed bool
}

// Create starts writing path with permission bits perm (applied exactly).
// With NoReplace it fails at once if path exists (and Commit checks again,
// atomically).
func Create(path string, perm fs.FileMode, opts ...Option) (*File, error) {
	var o options
	for _, fn := range opts {
		fn(&o)
	}
	if o.noReplace {
		// Fail early, before writing anything; the link in Commit decides.
		if _, err := os.Lstat(path); err == nil {
			return nil, pathError(path, fs.ErrExist)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return nil, pathError(path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, pathError(path, err)
	}
	f := &File{f: tmp, path: path, o: o}
	if o.direct && setDirect(tmp, true) == nil {
		f.d = &directState{on: true}
	}
	return f, nil
}

// Write writes to the temporary file.
func (f *File) Write(p []byte) (int, error) {
	if f.done {
		return 0, pathError(f.path, os.ErrClosed)
	}
	if f.d != nil {
		return f.writeDirect(p)
	}
	return f.f.Write(p)
}

// ReadFrom copies r to the temporary file (letting the kernel copy between
// descriptors where it can).
func (f *File) ReadFrom(r io.Reader) (int64, error) {
	if f.done {
		return 0, pathError(f.path, os.ErrClosed)
	}
	if f.d != nil {
		return io.Copy(struct{ io.Writer }{f}, r)
	}
	return f.f.ReadFrom(r)
}

// ReadAt reads back what was written (to check it before Commit).
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if f.done {
		return 0, pathError(f.path, os.ErrClosed)
	}
	if f.d != nil {
		// Reads of any size and offset: the descriptor leaves O_DIRECT
		// (Reader is the way to read a Direct file back cheaply).
		if err := f.flush(); err != nil {
			return 0, err
		}
		f.d.mu.Lock()
		if f.d.on {
			if err := setDirect(f.f, false); err != nil {
				f.d.mu.Unlock()
				return 0, err
			}
			f.d.on = false
		}
		f.d.mu.Unlock()
	}
	return f.f.ReadAt(p, off)
}

// Sync makes the bytes written so far durable now (nothing with NoSync),
// so that a caller can pay a long fsync without holding its own locks;
// Commit's fsync then has little left to do.
func (f *File) Sync() error {
	if f.done {
		return pathError(f.path, os.ErrClosed)
	}
	if err := f.flush(); err != nil {
		return err
	}
	if f.o.noSync {
		return nil
	}
	return f.f.Sync()
}

// Commit syncs the bytes written and puts the file at its path.
func (f *File) Commit() error { return f.commit(f.path) }

// CommitTo is Commit to another path on the same file system than the one
// given to Create: for content whose name is known only once it is
// written, such as a blob named by its hash. Its directory is the one
// synced.
func (f *File) CommitTo(path string) error { return f.commit(path) }

func (f *File) commit(path string) error {
	if f.done {
		return pathError(path, errors.New("atomicfile: already committed or aborted"))
	}
	f.done = true
	name := f.f.Name()
	placed := false
	defer func() {
		if !placed || f.o.noReplace {
			// After a link the temporary name is a second name of the
			// file; after a rename it no longer exists.
			os.Remove(name)
		}
	}()
	err := f.flush()
	f.release()
	if err == nil && !f.o.noSync {
		err = f.f.Sync()
	}
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return pathError(path, err)
	}
	if f.o.noReplace {
		if err := os.Link(name, path); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return pathError(path, fs.ErrExist)
			}
			return pathError(path, err)
		}
	} else if err := os.Rename(name, path); err != nil {
		return pathError(path, err)
	}
	placed = true
	f.placed = true
	if f.o.noSync {
		return nil
	}
	dir := filepath.Dir(path)
	if err := SyncDir(dir); err != nil {
		return pathError(path, fmt.Errorf("syncing directory %s: %w", dir, err))
	}
	return nil
}

// CommitOpen is Commit, and returns the committed file open for reading
// and writing: the file the path names once it returns, for a log that
// goes on being appended to after it was rewritten (reopening the path
// after Commit could fail and leave the writer with the old file). The
// file is returned whenever it was put at its path, even if the error
// that comes with it says the directory's fsync failed; the caller closes
// it.
func (f *File) CommitOpen() (*os.File, error) {
	if f.done {
		return nil, pathError(f.path, errors.New("atomicfile: already committed or aborted"))
	}
	rw, err := os.OpenFile(f.f.Name(), os.O_RDWR, 0)
	if err != nil {
		f.Abort()
		return nil, pathError(f.path, err)
	}
	err = f.commit(f.path)
	if !f.placed {
		rw.Close()
		return nil, err
	}
	return rw, err
}

// Abort drops the temporary file unless the file was committed.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.release()
	f.f.Close()
	os.Remove(f.f.Name())
}

// pathError names path in err, as a *fs.PathError, unless err already does.
func pathError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == path {
		return err
	}
	return &fs.PathError{Op: "write", Path: path, Err: err}
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

// RenameDir moves the directory tmp, whose contents the caller has made
// durable (SyncDir on each directory in it), to dir — which must be
// missing or empty — and fsyncs dir's parent, so that after a crash either
// no dir or the whole of it is there. It is how a directory, rather than
// a file, is put in place (a restored backup).
func RenameDir(tmp, dir string) error {
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(dir))
}
