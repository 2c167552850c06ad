// Package prealloc keeps files made ahead of the writes that will need
// them (decision 0166): each of a fixed size, filled with zeros, fsynced,
// and its name made durable by one directory sync for the batch. A write
// into such a file is then made durable by fdatasync alone: its blocks,
// its size and its name are on stable storage already, so no metadata
// changes and the file system's journal need not commit — which, under
// load, waits for other files' data too. A write past the file's size
// grows it and gets a full fsync.
//
// The zeros after the last write are not data: a reader of such a file
// must stop at the first record it cannot read (a length of zero), as it
// does at a torn one. A file of zeros only holds nothing; one left by a
// crash is removed with RemoveZeros when its directory is opened.
package prealloc

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"

	"github.com/cloisterhq/cloister/internal/atomicfile"
)

// File is a file made ahead: Name in the pool's directory, open for
// writing.
type File struct {
	Name string
	F    *os.File
}

// Pool keeps up to Count files of Size bytes of zeros ready in a
// directory, under names its name function draws, made in the
// background.
type Pool struct {
	dir   string
	count int
	size  int
	name  func() (string, error)

	mu      sync.Mutex
	ready   []File
	on      bool // set by Start
	shut    bool // set by Close
	filling bool // a goroutine is making files
	wg      sync.WaitGroup
}

// NewPool returns a pool of count files of size bytes in dir, named by
// name (a base name not in use). It makes none until Start.
func NewPool(dir string, count, size int, name func() (string, error)) *Pool {
	return &Pool{dir: dir, count: count, size: size, name: name}
}

// Size is the size of the pool's files.
func (p *Pool) Size() int { return p.size }

// Start lets the pool make files, and makes the first ones in the
// background.
func (p *Pool) Start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.on = true
	p.refillLocked()
}

// Take hands out a ready file, once; false if none is ready.
func (p *Pool) Take() (File, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.ready)
	if n == 0 || p.shut {
		return File{}, false
	}
	f := p.ready[n-1]
	p.ready = p.ready[:n-1]
	return f, true
}

// Ready reports how many files are ready and whether more are being made
// (tests).
func (p *Pool) Ready() (n int, filling bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready), p.filling
}

// Refill makes files up to the pool's count in the background. Call it
// after the write that took one is synced, so that making them does not
// share that sync.
func (p *Pool) Refill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refillLocked()
}

func (p *Pool) refillLocked() {
	if !p.on || p.shut || p.filling || len(p.ready) >= p.count {
		return
	}
	p.filling = true
	p.wg.Add(1)
	go p.fill()
}

func (p *Pool) fill() {
	defer p.wg.Done()
	for {
		p.mu.Lock()
		want := p.count - len(p.ready)
		if p.shut || want <= 0 {
			p.filling = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		made, err := p.Make(want)
		p.mu.Lock()
		if err != nil || p.shut {
			// A full disk, say: the writers that come make their files
			// themselves, and report the error if it persists.
			p.filling = false
			p.mu.Unlock()
			p.remove(made)
			return
		}
		p.ready = append(p.ready, made...)
		p.mu.Unlock()
	}
}

// Make creates k files of the pool's size under fresh names, now, and
// syncs them and their names (one directory sync for all). They are the
// caller's: the pool does not keep them.
func (p *Pool) Make(k int) ([]File, error) {
	var made []File
	fail := func(err error) ([]File, error) {
		p.remove(made)
		return nil, err
	}
	zeros := make([]byte, p.size)
	for range k {
		name, err := p.name()
		if err != nil {
			return fail(err)
		}
		f, err := os.OpenFile(filepath.Join(p.dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fail(err)
		}
		made = append(made, File{Name: name, F: f})
		if _, err := f.Write(zeros); err != nil {
			return fail(err)
		}
		if err := f.Sync(); err != nil {
			return fail(err)
		}
	}
	if err := atomicfile.SyncDir(p.dir); err != nil {
		return fail(err)
	}
	return made, nil
}

// Close stops making files, waits for a batch in the making, and removes
// the files not handed out.
func (p *Pool) Close() { p.remove(p.stop()) }

// Abandon forgets the ready files without removing them, as a crash
// would (tests: the next opening of the directory must remove them).
func (p *Pool) Abandon() {
	for _, f := range p.stop() {
		f.F.Close()
	}
}

// stop stops making files and returns those not handed out.
func (p *Pool) stop() []File {
	p.mu.Lock()
	p.shut = true
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	left := p.ready
	p.ready = nil
	return left
}

func (p *Pool) remove(fs []File) {
	for _, f := range fs {
		f.F.Close()
		os.Remove(filepath.Join(p.dir, f.Name))
	}
}

// WriteAt writes b at off in f, a file made ahead of size bytes, and
// makes it durable: with fdatasync when it ends within size (the blocks
// and size are durable already), else with a full fsync (the file grew).
func WriteAt(f *os.File, b []byte, off int64, size int) error {
	if _, err := f.WriteAt(b, off); err != nil {
		return err
	}
	if off+int64(len(b)) <= int64(size) {
		return DataSync(f)
	}
	return f.Sync()
}

// RemoveZeros removes the files in dir that match and hold nothing but
// zeros, at most max bytes: files made ahead and left by a process that
// stopped without handing them out, or writes cut short before their
// first byte. None of them held anything.
func RemoveZeros(dir string, match func(name string) bool, max int64) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || !match(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if fi, err := e.Info(); err != nil || fi.Size() > max {
			continue
		}
		if b, err := os.ReadFile(path); err == nil && int64(len(b)) <= max && bytes.Count(b, []byte{0}) == len(b) {
			os.Remove(path)
		}
	}
}
