package isolate

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"sync"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/sys"

	"github.com/cloisterhq/cloister/sealed"
)

// inputSource is where an input's bytes come from: a descriptor the host
// side opened (a regular file or a sealed memfd, read with pread; or a
// pipe, read in order), or anything else that reads at an offset (a
// sealed input decrypted as it is read). Nothing is copied into memory
// beyond what the guest asks for: a read lands in the guest's buffer.
type inputSource struct {
	// at reads at an offset; nil for a stream.
	at   io.ReaderAt
	size int64
	// stream is read in order (a pipe); pos is how far.
	stream io.Reader
	mu     sync.Mutex
	pos    int64
}

// inputFromFile makes the source of an input descriptor: pread for a
// regular file (or memfd), in order for a pipe.
func inputFromFile(f *os.File) (*inputSource, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	switch {
	case st.Mode().IsRegular():
		return &inputSource{at: f, size: st.Size()}, nil
	case st.Mode()&fs.ModeNamedPipe != 0:
		return &inputSource{stream: f}, nil
	}
	return nil, errors.New("an input descriptor is neither a regular file nor a pipe")
}

// unseal makes the source read the plaintext of the sealed file it holds:
// in place (decrypted chunk by chunk as read) for a file, in order for a
// stream. The header, and for a file the last chunk, are checked now.
func (s *inputSource) unseal(key *sealed.Key) error {
	if key == nil {
		return errors.New("no key for a sealed input")
	}
	if s.stream != nil {
		r, err := sealed.NewReader(s.stream, key)
		if err != nil {
			return err
		}
		s.stream = r
		return nil
	}
	r, n, err := sealed.NewReaderAt(s.at, s.size, key)
	if err != nil {
		return err
	}
	s.at, s.size = r, n
	return nil
}

// statSize is the size the guest sees: 0 for a stream, whose end is not
// known until it is reached.
func (s *inputSource) statSize() int64 {
	if s.stream != nil {
		return 0
	}
	return s.size
}

// readAt reads at off: anywhere in a file, only at the current position
// of a stream (EINVAL elsewhere: a pipe cannot seek).
func (s *inputSource) readAt(buf []byte, off int64) (int, experimentalsys.Errno) {
	if off < 0 {
		return 0, experimentalsys.EINVAL
	}
	if s.stream != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		if off != s.pos {
			return 0, experimentalsys.EINVAL
		}
		return s.readLocked(buf)
	}
	if off >= s.size || len(buf) == 0 {
		return 0, 0
	}
	buf = buf[:min(int64(len(buf)), s.size-off)]
	n, err := s.at.ReadAt(buf, off)
	if err != nil && !(errors.Is(err, io.EOF) && n == len(buf)) {
		return n, experimentalsys.EIO
	}
	return n, 0
}

// readLocked reads the next bytes of a stream; s.mu is held.
func (s *inputSource) readLocked(buf []byte) (int, experimentalsys.Errno) {
	if len(buf) == 0 {
		return 0, 0
	}
	n, err := s.stream.Read(buf)
	s.pos += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, experimentalsys.EIO
	}
	return n, 0
}

// inFile is an open input: read-only. A file's handles each have their
// own position; a stream has one, shared by all of its handles.
type inFile struct {
	experimentalsys.UnimplementedFile
	g      *guestFS
	src    *inputSource
	off    int64
	ino    sys.Inode
	closed bool
}

func (f *inFile) Dev() (uint64, experimentalsys.Errno)    { return 0, 0 }
func (f *inFile) Ino() (sys.Inode, experimentalsys.Errno) { return f.ino, 0 }
func (f *inFile) IsDir() (bool, experimentalsys.Errno)    { return false, 0 }
func (f *inFile) IsAppend() bool                          { return false }
func (f *inFile) SetAppend(bool) experimentalsys.Errno    { return experimentalsys.EBADF }
func (f *inFile) Stat() (sys.Stat_t, experimentalsys.Errno) {
	now := f.g.now()
	return sys.Stat_t{Ino: f.ino, Mode: 0o444, Nlink: 1, Size: f.src.statSize(), Atim: now, Mtim: now, Ctim: now}, 0
}
func (f *inFile) Read(buf []byte) (int, experimentalsys.Errno) {
	if f.src.stream != nil {
		f.src.mu.Lock()
		defer f.src.mu.Unlock()
		return f.src.readLocked(buf)
	}
	n, errno := f.src.readAt(buf, f.off)
	f.off += int64(n)
	return n, errno
}
func (f *inFile) Pread(buf []byte, off int64) (int, experimentalsys.Errno) {
	return f.src.readAt(buf, off)
}
func (f *inFile) Seek(offset fileOffset, whence int) (fileOffset, experimentalsys.Errno) {
	if f.src.stream != nil {
		// Only telling the position: a pipe cannot seek.
		f.src.mu.Lock()
		defer f.src.mu.Unlock()
		if offset == 0 && whence == io.SeekCurrent {
			return f.src.pos, 0
		}
		return f.src.pos, experimentalsys.EINVAL
	}
	n, errno := seek(f.off, f.src.size, offset, whence)
	if errno == 0 {
		f.off = n
	}
	return n, errno
}
func (f *inFile) Readdir(int) ([]experimentalsys.Dirent, experimentalsys.Errno) {
	return nil, experimentalsys.ENOTDIR
}
func (f *inFile) Write([]byte) (int, experimentalsys.Errno) { return 0, experimentalsys.EBADF }
func (f *inFile) Pwrite([]byte, int64) (int, experimentalsys.Errno) {
	return 0, experimentalsys.EBADF
}
func (f *inFile) Truncate(int64) experimentalsys.Errno       { return experimentalsys.EBADF }
func (f *inFile) Sync() experimentalsys.Errno                { return 0 }
func (f *inFile) Datasync() experimentalsys.Errno            { return 0 }
func (f *inFile) Utimens(int64, int64) experimentalsys.Errno { return experimentalsys.EROFS }
func (f *inFile) Close() experimentalsys.Errno {
	if !f.closed {
		f.closed = true
		f.g.closeHandle(nil)
	}
	return 0
}
