// Package backup copies a stopped node's data directory or a validator's
// home into one archive and restores it onto a fresh directory, checking
// every file against the archive's manifest (docs/operations.md, decision
// 0095).
//
// The archive is a tar stream: the directory's entries under "data/", in
// lexical order, then the manifest "cloister-backup.json" naming each
// regular file with its size and SHA-256. Caches that the node rebuilds
// (compiled programs) are left out. A restore writes into a temporary
// sibling of the target and renames it into place only once every file
// has been written, synced and found as the manifest says: a crash or a
// corrupt archive leaves no half-restored directory.
//
// The directory must not be in use: Lock is held by a running node or
// validator (the CLI takes it), and Create takes it too.
package backup

import (
	"archive/tar"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cloisterhq/cloister/internal/atomicfile"
)

// Format names the archive layout in its manifest.
const Format = "cloister-backup/1"

// LockFile is the lock a running node or validator holds in its directory.
const LockFile = ".cloister.lock"

// ManifestName is the archive's last entry.
const ManifestName = "cloister-backup.json"

// Kinds of directory.
const (
	KindNode      = "node"
	KindValidator = "validator"
)

// skipped are top-level directories of a node that are caches, rebuilt on
// demand and tied to the machine (compiled code): not backed up.
var skipped = []string{"wazero-cache", "wazero-cache-cancel", "isolate-cache"}

// Limits of what Restore accepts from an archive.
const (
	maxManifest = 64 << 20
	maxFiles    = 1 << 20
)

// Manifest describes an archive.
type Manifest struct {
	Format  string    `json:"format"`
	Kind    string    `json:"kind"`
	Created time.Time `json:"created"`
	Files   []File    `json:"files"`
	Skipped []string  `json:"skipped,omitempty"`
}

// File is one regular file of the archive.
type File struct {
	Path   string `json:"path"` // slash-separated, relative to the directory
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Bytes is the total size of the files.
func (m *Manifest) Bytes() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// ErrInUse is returned when a running node or validator holds the lock.
var ErrInUse = errors.New("the directory is in use by a running node or validator")

// Lock takes dir's lock (creating dir/.cloister.lock), without waiting:
// ErrInUse if another process, or this one, holds it. The lock lasts until
// release is called or the process ends.
//
// It is a POSIX record lock (fcntl F_SETLK), owned by the process, not a
// flock on the open file: a child forked by the holder (an isolate worker
// between fork and exec, say) shares the open file but never the lock, so
// when the holder dies — SIGKILL included — the lock is free at once for
// the next process, whatever its children are still doing. Such a lock is
// dropped when the process closes any descriptor of the file, so nothing
// else here opens it (Create skips it), and a second Lock in this process
// is refused from the table below before the file is opened.
func Lock(dir string) (release func(), err error) {
	path := filepath.Join(dir, LockFile)
	if st, err := os.Stat(path); err == nil {
		if id, ok := fileID(st); ok {
			heldMu.Lock()
			inUse := held[id]
			heldMu.Unlock()
			if inUse {
				return nil, fmt.Errorf("%s: %w (%s is held by this process): stop it first", dir, ErrInUse, LockFile)
			}
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	id, _ := fileID(st)
	heldMu.Lock()
	defer heldMu.Unlock()
	if held[id] {
		// Taken by this process since the check above: the descriptor
		// must stay open (closing it would drop that lock).
		parked = append(parked, f)
		return nil, fmt.Errorf("%s: %w (%s is held by this process): stop it first", dir, ErrInUse, LockFile)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		f.Close()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("%s: %w (%s is held): stop it first", dir, ErrInUse, LockFile)
		}
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	held[id] = true
	var once sync.Once
	return func() {
		once.Do(func() {
			heldMu.Lock()
			defer heldMu.Unlock()
			delete(held, id)
			f.Close()
		})
	}, nil
}

// The locks this process holds, by file: POSIX locks do not conflict
// within one process.
var (
	heldMu sync.Mutex
	held   = map[[2]uint64]bool{}
	parked []*os.File
)

func fileID(st fs.FileInfo) ([2]uint64, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return [2]uint64{}, false
	}
	return [2]uint64{uint64(sys.Dev), sys.Ino}, true
}

// KindOf tells a node's data directory from a validator's home.
func KindOf(dir string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, "platform.key")); err == nil {
		return KindNode, nil
	}
	if _, err := os.Stat(filepath.Join(dir, "cloister-ledger.json")); err == nil {
		return KindValidator, nil
	}
	return "", fmt.Errorf("%s is neither a node's data directory (no platform.key) nor a validator's home (no cloister-ledger.json)", dir)
}

// Create writes an archive of dir to out (atomically, mode 0600: it holds
// the directory's private keys). dir must not be in use.
func Create(dir, out string) (*Manifest, error) {
	kind, err := KindOf(dir)
	if err != nil {
		return nil, err
	}
	release, err := Lock(dir)
	if err != nil {
		return nil, err
	}
	defer release()
	af, err := atomicfile.Create(out, 0o600)
	if err != nil {
		return nil, err
	}
	defer af.Abort()
	m := &Manifest{Format: Format, Kind: kind, Created: time.Now().UTC()}
	tw := tar.NewWriter(af)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "." || rel == LockFile {
			return nil
		}
		if d.IsDir() && kind == KindNode && slices.Contains(skipped, rel) {
			m.Skipped = append(m.Skipped, rel)
			return fs.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: "data/" + rel, Mode: int64(info.Mode().Perm()), ModTime: info.ModTime().UTC(), Format: tar.FormatPAX}
		switch {
		case d.IsDir():
			hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
			return tw.WriteHeader(hdr)
		case info.Mode().IsRegular():
			hdr.Typeflag, hdr.Size = tar.TypeReg, info.Size()
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			h := sha256.New()
			n, err := io.Copy(io.MultiWriter(tw, h), io.LimitReader(f, info.Size()))
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if n != info.Size() {
				return fmt.Errorf("%s shrank while it was read: is the directory in use?", p)
			}
			m.Files = append(m.Files, File{Path: rel, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))})
			return nil
		default:
			return fmt.Errorf("%s is a %s, not a regular file or directory: not backed up", p, info.Mode().Type())
		}
	})
	if err != nil {
		return nil, err
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := tw.WriteHeader(&tar.Header{Name: ManifestName, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(mb)), ModTime: m.Created, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(mb); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return m, af.Commit()
}

// Restore unpacks the archive read from r into dir, which must not exist
// or be empty. Every file must be as the manifest says, or nothing is
// restored.
func Restore(r io.Reader, dir string) (*Manifest, error) {
	dir = filepath.Clean(dir)
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("%s is not empty: restore onto a fresh directory", dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := dir + ".restoring-" + hex.EncodeToString(rnd[:])
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, err
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	m, dirs, err := unpack(r, tmp)
	if err != nil {
		return nil, err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := atomicfile.SyncDir(filepath.Join(tmp, filepath.FromSlash(dirs[i]))); err != nil {
			return nil, err
		}
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return nil, err
	}
	// Onto a missing or empty directory: rename(2) replaces an empty one.
	if err := atomicfile.RenameDir(tmp, dir); err != nil {
		return nil, fmt.Errorf("moving the restored directory into place: %w", err)
	}
	done = true
	return m, nil
}

// unpack writes the archive's entries under tmp and checks them against
// its manifest; it returns the manifest and the directories made.
func unpack(r io.Reader, tmp string) (*Manifest, []string, error) {
	tr := tar.NewReader(r)
	got := map[string]File{}
	var dirs []string
	var m *Manifest
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading the archive: %w", err)
		}
		if m != nil {
			return nil, nil, fmt.Errorf("archive: %q follows the manifest, which must come last", hdr.Name)
		}
		if hdr.Name == ManifestName && hdr.Typeflag == tar.TypeReg {
			if hdr.Size > maxManifest {
				return nil, nil, fmt.Errorf("archive: manifest of %d bytes, at most %d", hdr.Size, maxManifest)
			}
			b, err := io.ReadAll(io.LimitReader(tr, hdr.Size))
			if err != nil {
				return nil, nil, err
			}
			m = new(Manifest)
			dec := json.NewDecoder(strings.NewReader(string(b)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(m); err != nil {
				return nil, nil, fmt.Errorf("archive: manifest: %w", err)
			}
			continue
		}
		rel, err := entryPath(hdr.Name)
		if err != nil {
			return nil, nil, err
		}
		if len(got)+len(dirs) >= maxFiles {
			return nil, nil, fmt.Errorf("archive: more than %d entries", maxFiles)
		}
		dst := filepath.Join(tmp, filepath.FromSlash(rel))
		mode := fs.FileMode(hdr.Mode).Perm() &^ 0o022 // never writable by others
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, mode|0o700); err != nil {
				return nil, nil, err
			}
			dirs = append(dirs, rel)
		case tar.TypeReg:
			if _, dup := got[rel]; dup {
				return nil, nil, fmt.Errorf("archive: %s appears twice", rel)
			}
			f, err := writeFile(tr, dst, hdr.Size, mode)
			if err != nil {
				return nil, nil, fmt.Errorf("restoring %s: %w", rel, err)
			}
			f.Path = rel
			got[rel] = f
			os.Chtimes(dst, hdr.ModTime, hdr.ModTime) // the blob cache evicts by modification time
		default:
			return nil, nil, fmt.Errorf("archive: %s is of type %q: only files and directories are restored", rel, hdr.Typeflag)
		}
	}
	if m == nil {
		return nil, nil, errors.New("archive: no manifest (cut short?)")
	}
	if m.Format != Format || (m.Kind != KindNode && m.Kind != KindValidator) {
		return nil, nil, fmt.Errorf("archive: format %q of kind %q, want %q of a node or validator", m.Format, m.Kind, Format)
	}
	if len(m.Files) != len(got) {
		return nil, nil, fmt.Errorf("archive: %d files, the manifest lists %d", len(got), len(m.Files))
	}
	for _, want := range m.Files {
		if g, ok := got[want.Path]; !ok || g != want {
			return nil, nil, fmt.Errorf("archive: %s is not as the manifest says (size %d, sha256 %s)", want.Path, want.Size, want.SHA256)
		}
	}
	return m, dirs, nil
}

// entryPath checks an archive entry's name: under "data/", relative,
// without "..".
func entryPath(name string) (string, error) {
	rel, ok := strings.CutPrefix(strings.TrimSuffix(name, "/"), "data/")
	if !ok || rel == "" || path.Clean(rel) != rel || strings.HasPrefix(rel, "/") || rel == ".." || strings.HasPrefix(rel, "../") || strings.Contains(rel, "/../") {
		return "", fmt.Errorf("archive: entry %q is not a relative path under data/", name)
	}
	return rel, nil
}

// writeFile writes size bytes of r to a new file at dst, synced.
func writeFile(r io.Reader, dst string, size int64, mode fs.FileMode) (File, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return File{}, err
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o600)
	if err != nil {
		return File{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, size))
	if err != nil {
		return File{}, err
	}
	if n != size {
		return File{}, fmt.Errorf("%d of %d bytes", n, size)
	}
	if err := f.Sync(); err != nil {
		return File{}, err
	}
	return File{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, f.Close()
}
