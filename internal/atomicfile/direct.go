package atomicfile

import (
	"errors"
	"io"
	"os"
	"sync"
	"unsafe"
)

// Direct makes Create write the temporary file around the page cache
// (O_DIRECT) where the file system allows it, for large streams that are
// synced before use and read back at most once, sequentially (Reader): an
// upload of gigabytes. Copying every byte into the page cache, and later
// writing it back at fsync, costs more CPU than the rest of such an
// upload on a virtual machine (decision 0078); written directly, the
// bytes go from an aligned buffer to the device, and Commit's fsync has
// only metadata left. Where O_DIRECT is refused (tmpfs, some network file
// systems) the file is written as without the option. A direct write
// returns once the device has the bytes, so a caller that does not sync
// (NoSync) should not ask for it: the page cache would serve it better.
func Direct() Option { return func(o *options) { o.direct = true } }

// directBlock is the unit of direct writes and reads: a multiple of every
// logical block size (512 B to 4 KiB), large enough that one system call
// moves a whole upload chunk.
const directBlock = 4 << 20

// directAlign is the alignment O_DIRECT needs of buffers, offsets and
// lengths: 4 KiB covers every device's logical block size.
const directAlign = 4096

// blockPool holds aligned directBlock buffers (a File holds one only
// while bytes wait to fill a block, and Reader two while it reads).
var blockPool = sync.Pool{New: func() any {
	b := make([]byte, directBlock+directAlign)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (directAlign - 1))
	if off != 0 {
		off = directAlign - off
	}
	b = b[off : off+directBlock : off+directBlock]
	return &b
}}

// directState is a direct File's write buffer: bytes not yet written,
// because O_DIRECT writes whole aligned blocks only.
type directState struct {
	mu  sync.Mutex // flush against concurrent ReadAt, Sync and Reader
	buf *[]byte
	n   int // bytes waiting in buf
	// on while the descriptor has O_DIRECT; off once a tail shorter than
	// a block was written (every later write is buffered) or the file
	// system refused a direct write.
	on bool
}

// write appends p: whole blocks go to the file directly, the rest waits.
func (f *File) writeDirect(p []byte) (int, error) {
	d := f.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.on {
		return f.f.Write(p)
	}
	written := 0
	for len(p) > 0 {
		if d.buf == nil {
			d.buf = blockPool.Get().(*[]byte)
		}
		c := copy((*d.buf)[d.n:], p)
		d.n += c
		p = p[c:]
		written += c
		if d.n == directBlock {
			if err := f.writeBlockLocked(); err != nil {
				return written - d.n, err
			}
		}
	}
	return written, nil
}

// writeBlockLocked writes the aligned part of the buffer directly and,
// when the file system refuses that, everything buffered instead.
func (f *File) writeBlockLocked() error {
	d := f.d
	b := (*d.buf)[:d.n]
	whole := len(b) &^ (directAlign - 1)
	if whole > 0 && d.on {
		n, err := f.f.Write(b[:whole])
		if err != nil && errors.Is(err, errInvalid) && n == 0 {
			// Accepted at open, refused at write (some file systems):
			// the rest goes through the page cache.
			if err = setDirect(f.f, false); err == nil {
				d.on = false
				n, err = f.f.Write(b[:whole])
			}
		}
		if err != nil {
			// The buffer keeps what was not written.
			d.n = copy(*d.buf, b[n:])
			return err
		}
		b = b[whole:]
	}
	if len(b) > 0 {
		// A tail shorter than a block (the end of the stream): the
		// descriptor leaves O_DIRECT, and later writes are buffered.
		if d.on {
			if err := setDirect(f.f, false); err != nil {
				d.n = copy(*d.buf, b)
				return err
			}
			d.on = false
		}
		n, err := f.f.Write(b)
		if err != nil {
			d.n = copy(*d.buf, b[n:])
			return err
		}
	}
	d.n = 0
	blockPool.Put(d.buf)
	d.buf = nil
	return nil
}

// flush writes whatever waits in the buffer (before a sync, a read, the
// commit).
func (f *File) flush() error {
	if f.d == nil {
		return nil
	}
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	if f.d.n == 0 {
		return nil
	}
	return f.writeBlockLocked()
}

// release returns the write buffer to the pool (after Commit or Abort).
func (f *File) release() {
	if f.d == nil {
		return
	}
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	if f.d.buf != nil {
		blockPool.Put(f.d.buf)
		f.d.buf, f.d.n = nil, 0
	}
}

// Reader reads the first size bytes written so far from the start, in
// order, once (what is buffered is written first). For a Direct file it
// reads around the page cache too, a block ahead of the caller, so that
// a check of gigabytes (decrypting an upload before it is committed)
// neither fills the page cache nor waits on the device between blocks.
// It may run beside Sync. Close it when done.
func (f *File) Reader(size int64) (io.ReadCloser, error) {
	if f.done {
		return nil, pathError(f.path, os.ErrClosed)
	}
	if err := f.flush(); err != nil {
		return nil, pathError(f.path, err)
	}
	if f.d == nil {
		return io.NopCloser(io.NewSectionReader(f.f, 0, size)), nil
	}
	return newDirectReader(f.f.Name(), size)
}

// plainReader reads name's first size bytes through the page cache (where
// O_DIRECT is refused).
func plainReader(name string, size int64) (io.ReadCloser, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, 0, size), f}, nil
}
