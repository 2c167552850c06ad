package isolate

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cloisterhq/cloister/internal/atomicfile"
)

// The compilation cache, authenticated (decision 0073). wazero trusts what
// it deserialises from its cache completely — it is native code — so a
// cache entry must come from a compilation of exactly the module it is
// used for, and nothing a worker does may change what another job loads.
//
//   - Entries live in DataDir/isolate-cache/entries, written only by the
//     parent: one file per (module SHA-256, wazero cache directory name),
//     holding the name of wazero's file, its bytes and an HMAC-SHA-256
//     under the node's cache key (DataDir/isolate-cache/key, or
//     Options.CacheKey) over all of that and the module's hash.
//   - A worker never sees that directory. It gets a staging directory of
//     its own, private to it, mounted as its cache; before its module is
//     compiled (the preload of a warm worker, or the job), the parent
//     copies in the verified entries for that module and nothing else. An
//     entry whose MAC does not verify is refused (deleted, logged by
//     count) and the worker compiles the module afresh.
//   - After the worker is gone, the parent takes from its staging
//     directory the one file wazero wrote (a regular file with a 64-hex
//     name, below the size bound, not a link), authenticates it and keeps
//     it for that module alone — never for another. A sealed module is
//     never cached (decision 0072). Then the staging directory is removed.
//
// So a worker compromised while compiling — the set-up phase runs our code
// on untrusted bytes — can at worst poison the entry of its own module,
// which only ever runs in that module's later jobs: what the same bytes
// could do by exploiting the compiler each time. It cannot reach another
// module's entry, and an entry changed on disk is refused.

// maxCacheEntry bounds an entry (and, through RLIMIT_FSIZE, any file a
// worker writes while it compiles).
const maxCacheEntry = 512 << 20

// cacheMagic starts every entry file.
const cacheMagic = "cloister-isolate-cache-v1\n"

type entryCache struct {
	dir     string // DataDir/isolate-cache
	key     []byte
	mu      sync.Mutex
	staging string // this cache's (Runtime's) directory of staging directories
	// entriesDir holds the entries kept under this key.
	entriesDir string
	// verified remembers entries whose MAC was checked, by what their
	// file looked like then: any change to a file changes its ctime.
	verified map[string]fileStamp
	refused  int
	// staged remembers the inode of each entry copied into a staging
	// directory: wazero replaces a file it writes (a new inode), so a
	// file still on that inode when the worker is gone is one it loaded.
	staged map[string]uint64
	loaded int
}

type fileStamp struct {
	ino, size       uint64
	ctime, mtimeSec int64
	ctimeNsec       int64
}

func stampOf(st *unix.Stat_t) fileStamp {
	return fileStamp{ino: st.Ino, size: uint64(st.Size), ctime: st.Ctim.Sec, ctimeNsec: st.Ctim.Nsec, mtimeSec: st.Mtim.Sec}
}

// openEntryCache opens (creating) the cache under dataDir, with key or the
// key file it keeps there.
func openEntryCache(dataDir string, key []byte) (*entryCache, error) {
	c := &entryCache{dir: filepath.Join(dataDir, "isolate-cache"), verified: map[string]fileStamp{}, staged: map[string]uint64{}}
	for _, d := range []string{c.dir, c.stagingRoot()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("isolate: creating the compilation cache: %w", err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, fmt.Errorf("isolate: making the compilation cache private: %w", err)
		}
	}
	// Several runtimes may share a data directory (a node and a `cloister
	// run`): each stages in a directory of its own; those of a runtime
	// that crashed are removed after a day.
	if ents, err := os.ReadDir(c.stagingRoot()); err == nil {
		for _, e := range ents {
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > 24*time.Hour {
				os.RemoveAll(filepath.Join(c.stagingRoot(), e.Name()))
			}
		}
	}
	var err error
	if c.staging, err = os.MkdirTemp(c.stagingRoot(), "r"); err != nil {
		return nil, fmt.Errorf("isolate: creating the compilation cache's staging directory: %w", err)
	}
	switch {
	case key != nil && len(key) < 32:
		return nil, errors.New("isolate: the cache key must be at least 32 bytes")
	case key != nil:
		c.key = bytes.Clone(key)
	default:
		kf := filepath.Join(c.dir, "key")
		b, err := os.ReadFile(kf)
		switch {
		case err == nil && len(b) == 32:
			c.key = b
		case err == nil || errors.Is(err, os.ErrNotExist):
			k := make([]byte, 32)
			rand.Read(k)
			if err := atomicfile.WriteFile(kf, k, 0o600); err != nil {
				return nil, fmt.Errorf("isolate: writing the cache key: %w", err)
			}
			c.key = k
		default:
			return nil, fmt.Errorf("isolate: reading the cache key: %w", err)
		}
	}
	// Entries are kept per key (a node's derived key, or the key file of
	// runtimes without one), so runtimes sharing a data directory under
	// different keys do not refuse each other's entries.
	id := sha256.Sum256(append([]byte("cloister isolate cache key id\x00"), c.key...))
	c.entriesDir = filepath.Join(c.dir, "entries", hex.EncodeToString(id[:8]))
	if err := os.MkdirAll(c.entriesDir, 0o700); err != nil {
		return nil, fmt.Errorf("isolate: creating the compilation cache: %w", err)
	}
	return c, nil
}

func (c *entryCache) entries() string     { return c.entriesDir }
func (c *entryCache) stagingRoot() string { return filepath.Join(c.dir, "staging") }

// newStaging makes a worker's own, empty cache directory.
func (c *entryCache) newStaging() (string, error) {
	d, err := os.MkdirTemp(c.staging, "w")
	if err != nil {
		return "", fmt.Errorf("isolate: creating a worker's cache directory: %w", err)
	}
	return d, nil
}

// close removes the runtime's staging directories (its workers are gone).
func (c *entryCache) close() { os.RemoveAll(c.staging) }

// mac authenticates an entry: the module it was compiled from, wazero's
// name for it and its bytes.
func (c *entryCache) mac(sum [32]byte, name string, content []byte) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte("cloister isolate cache v1\x00"))
	m.Write(sum[:])
	m.Write(binary.BigEndian.AppendUint16(nil, uint16(len(name))))
	m.Write([]byte(name))
	m.Write(content)
	return m.Sum(nil)
}

// entryPath is where the entry of module sum under wazero's cache
// directory vdir is kept.
func (c *entryCache) entryPath(sum [32]byte, vdir string) string {
	return filepath.Join(c.entries(), hex.EncodeToString(sum[:])+"."+vdir)
}

// validVersionDir is what the engines name their cache directories:
// wazero its own ("wazero-" and its version), the wasmtime worker
// "wasmtime-" and its version and configuration (wasmtime_engine.go).
func validVersionDir(s string) bool {
	return (strings.HasPrefix(s, "wazero-") || strings.HasPrefix(s, "wasmtime-")) &&
		len(s) < 128 && !strings.ContainsAny(s, "/\x00") && s != "." && s != ".."
}

func validEntryName(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// stage copies the verified entries of module sum into a worker's staging
// directory. An entry that does not verify is deleted and counted.
func (c *entryCache) stage(staging string, sum [32]byte) {
	matches, _ := filepath.Glob(filepath.Join(c.entries(), hex.EncodeToString(sum[:])+".*"))
	for _, p := range matches {
		if _, vdir, _ := strings.Cut(filepath.Base(p), "."); !validVersionDir(vdir) {
			continue // not an entry
		}
		name, off, err := c.verify(p, sum)
		if err != nil {
			c.refuse(p)
			continue
		}
		vdir, file, _ := strings.Cut(name, "/")
		if !validVersionDir(vdir) || !validEntryName(file) {
			c.refuse(p)
			continue
		}
		if err := os.MkdirAll(filepath.Join(staging, vdir), 0o700); err != nil {
			continue
		}
		dst := filepath.Join(staging, vdir, file)
		if ino, ok := c.copyOut(p, off, dst); ok {
			c.mu.Lock()
			c.staged[dst] = ino
			c.mu.Unlock()
		}
	}
}

// Loaded says how many entries given to workers were loaded as given
// (not compiled afresh and rewritten).
func (c *entryCache) Loaded() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loaded
}

// settle counts the entries staged for a worker that it left as given,
// and forgets them.
func (c *entryCache) settle(staging string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for dst, ino := range c.staged {
		if filepath.Dir(filepath.Dir(dst)) != staging {
			continue
		}
		delete(c.staged, dst)
		var st unix.Stat_t
		if unix.Lstat(dst, &st) == nil && st.Ino == ino {
			c.loaded++
		}
	}
}

func (c *entryCache) refuse(p string) {
	os.Remove(p)
	c.mu.Lock()
	c.refused++
	delete(c.verified, p)
	c.mu.Unlock()
}

// Refused says how many entries failed to verify and were dropped.
func (c *entryCache) Refused() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refused
}

// verify checks an entry file's MAC (or that the file is unchanged since it
// was checked) and returns wazero's name for it and where its bytes start.
func (c *entryCache) verify(p string, sum [32]byte) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", 0, err
	}
	hdr := make([]byte, len(cacheMagic)+32+2)
	if _, err := io.ReadFull(f, hdr); err != nil || string(hdr[:len(cacheMagic)]) != cacheMagic {
		return "", 0, errors.New("not a cache entry")
	}
	mac := hdr[len(cacheMagic) : len(cacheMagic)+32]
	nl := int(binary.BigEndian.Uint16(hdr[len(cacheMagic)+32:]))
	nameB := make([]byte, nl)
	if _, err := io.ReadFull(f, nameB); err != nil {
		return "", 0, err
	}
	name := string(nameB)
	off := int64(len(hdr) + nl)
	c.mu.Lock()
	seen, ok := c.verified[p]
	c.mu.Unlock()
	if ok && seen == stampOf(&st) {
		return name, off, nil
	}
	if st.Size-off > maxCacheEntry {
		return "", 0, errors.New("entry too large")
	}
	content := make([]byte, st.Size-off)
	if _, err := io.ReadFull(f, content); err != nil {
		return "", 0, err
	}
	if !hmac.Equal(mac, c.mac(sum, name, content)) {
		return "", 0, errors.New("the entry's MAC does not verify")
	}
	c.mu.Lock()
	c.verified[p] = stampOf(&st)
	c.mu.Unlock()
	return name, off, nil
}

// copyOut writes the bytes of entry p from off to dst, in the kernel
// (copy_file_range) where it can.
func (c *entryCache) copyOut(p string, off int64, dst string) (ino uint64, ok bool) {
	src, err := os.Open(p)
	if err != nil {
		return 0, false
	}
	defer src.Close()
	if _, err := src.Seek(off, io.SeekStart); err != nil {
		return 0, false
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, false
	}
	defer out.Close()
	if _, err := io.Copy(out, src); err != nil {
		os.Remove(dst)
		return 0, false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(out.Fd()), &st); err != nil {
		return 0, false
	}
	return st.Ino, true
}

// harvest takes from a worker's staging directory, once the worker is
// gone, the entry wazero wrote for module sum (if it is new), keeps it
// authenticated, and removes the directory.
func (c *entryCache) harvest(staging string, sum [32]byte, keep bool) {
	defer os.RemoveAll(staging)
	c.settle(staging)
	if !keep {
		return
	}
	vdirs, err := os.ReadDir(staging)
	if err != nil {
		return
	}
	for _, v := range vdirs {
		if !v.IsDir() || !validVersionDir(v.Name()) { // IsDir: from lstat, a link is not one
			continue
		}
		files, err := os.ReadDir(filepath.Join(staging, v.Name()))
		if err != nil {
			continue
		}
		var entry os.DirEntry
		n := 0
		for _, e := range files {
			if validEntryName(e.Name()) {
				entry, n = e, n+1
			}
		}
		if n != 1 || !entry.Type().IsRegular() {
			continue
		}
		content, err := readPlainFile(filepath.Join(staging, v.Name(), entry.Name()))
		if err != nil {
			continue
		}
		name := v.Name() + "/" + entry.Name()
		p := c.entryPath(sum, v.Name())
		if old, off, err := c.verify(p, sum); err == nil && old == name {
			if same, _ := sameContent(p, off, content); same {
				continue // the entry it was given
			}
		}
		var b bytes.Buffer
		b.WriteString(cacheMagic)
		b.Write(c.mac(sum, name, content))
		b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(name))))
		b.WriteString(name)
		b.Write(content)
		if err := atomicfile.WriteFile(p, b.Bytes(), 0o600, atomicfile.NoSync()); err == nil {
			c.mu.Lock()
			delete(c.verified, p)
			c.mu.Unlock()
		}
	}
}

// readPlainFile reads a regular file that is not a link and not linked
// elsewhere, of at most maxCacheEntry bytes.
func readPlainFile(p string) ([]byte, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 || st.Size > maxCacheEntry {
		return nil, errors.New("not a plain file of a cache entry's size")
	}
	b := make([]byte, st.Size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, err
	}
	return b, nil
}

func sameContent(p string, off int64, content []byte) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size()-off != int64(len(content)) {
		return false, err
	}
	b := make([]byte, len(content))
	if _, err := f.ReadAt(b, off); err != nil {
		return false, err
	}
	return bytes.Equal(b, content), nil
}
