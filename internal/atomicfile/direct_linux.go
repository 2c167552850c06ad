package atomicfile

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

var errInvalid error = unix.EINVAL

// setDirect turns O_DIRECT on or off on f's descriptor.
func setDirect(f *os.File, on bool) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := sc.Control(func(fd uintptr) {
		fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if err != nil {
			serr = err
			return
		}
		if on {
			fl |= unix.O_DIRECT
		} else {
			fl &^= unix.O_DIRECT
		}
		_, serr = unix.FcntlInt(fd, unix.F_SETFL, fl)
	}); err != nil {
		return err
	}
	return serr
}

// directReader reads a file from its start around the page cache, one
// block ahead of its caller.
type directReader struct {
	f      *os.File
	blocks chan readBlock
	stop   chan struct{}
	cur    readBlock
	pos    int
	err    error
}

type readBlock struct {
	buf *[]byte
	n   int
	err error
}

func newDirectReader(name string, size int64) (io.ReadCloser, error) {
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err == unix.EINVAL {
		return plainReader(name, size)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	r := &directReader{f: os.NewFile(uintptr(fd), name), blocks: make(chan readBlock, 1), stop: make(chan struct{})}
	go r.fill(size)
	return r, nil
}

// fill reads blocks in order until size bytes are read, an error, or Close.
func (r *directReader) fill(size int64) {
	defer close(r.blocks)
	for off := int64(0); off < size; off += directBlock {
		buf := blockPool.Get().(*[]byte)
		want := min(int64(directBlock), size-off)
		n := 0
		var err error
		for int64(n) < want {
			// Whole aligned lengths only: the last read asks for the
			// rest of the block and gets the file's end.
			var m int
			m, err = r.f.ReadAt((*buf)[n:], off+int64(n))
			n += m
			if err != nil || m == 0 || m%directAlign != 0 {
				break
			}
		}
		if int64(n) > want {
			n = int(want)
		}
		if int64(n) == want {
			err = nil
		} else if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		select {
		case r.blocks <- readBlock{buf, n, err}:
		case <-r.stop:
			blockPool.Put(buf)
			return
		}
		if err != nil {
			return
		}
	}
}

func (r *directReader) Read(p []byte) (int, error) {
	for r.cur.buf == nil || r.pos == r.cur.n {
		if r.err != nil {
			return 0, r.err
		}
		if r.cur.buf != nil {
			blockPool.Put(r.cur.buf)
			r.cur.buf = nil
		}
		b, ok := <-r.blocks
		if !ok {
			r.err = io.EOF
			return 0, io.EOF
		}
		r.cur, r.pos = b, 0
		if b.err != nil {
			r.err = b.err
		}
	}
	n := copy(p, (*r.cur.buf)[r.pos:r.cur.n])
	r.pos += n
	return n, nil
}

func (r *directReader) Close() error {
	close(r.stop)
	for b := range r.blocks {
		blockPool.Put(b.buf)
	}
	if r.cur.buf != nil {
		blockPool.Put(r.cur.buf)
		r.cur.buf = nil
	}
	return r.f.Close()
}
