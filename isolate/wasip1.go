package isolate

import (
	"encoding/binary"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/sys"
)

// WASI preview 1 written once over the guest's file system (guestFS, or a
// host directory for the conformance suite) and a view of the guest's
// linear memory as a byte slice, for engines that do not bring their own
// WASI on a virtual file system (the wasmtime worker: wasmtime's WASI opens
// host directories). The wazero engine uses wazero's own functions
// (wasi.go); both see the same files, limits and clocks.

// wasiFunc is one WASI function: its parameter types (true: i64) and
// whether it returns an errno (all but proc_exit).
type wasiFunc struct {
	params []bool
	noRet  bool
	fn     func(w *wasiHost, mem []byte, a []uint64) uint32
}

// errProcExit carries proc_exit out of the guest (the engine turns it into
// a trap that ends the run).
type errProcExit struct{ code uint32 }

func (e *errProcExit) Error() string { return "proc_exit" }

// wasiHost is the WASI state of one run.
type wasiHost struct {
	fsys   experimentalsys.FS
	gfs    *guestFS // nil for a conformance root
	fds    map[uint32]*wasiFD
	args   []string
	env    []string
	stdout io.Writer
	stderr io.Writer
	// clocks and randomness: deterministic or the system's
	walltime  func() int64
	nanotime  func() int64
	nanosleep func(int64)
	random    io.Reader
	realRes   uint64
	// exit is set by proc_exit.
	exit *errProcExit
}

// wasiFD is one open descriptor. path is the file's guest path (relative
// to the root, "" for the root itself), used to resolve paths of path_*
// calls and to reread a directory.
type wasiFD struct {
	file    experimentalsys.File // nil for stdio
	stdio   int                  // 0, 1, 2 for the standard streams; -1 otherwise
	path    string
	isDir   bool
	preopen string
	dirents []experimentalsys.Dirent // listing of a directory, with "." and ".."
	fdflags uint16
}

// WASI errno values.
const (
	wasiESUCCESS     = 0
	wasiEBADF        = 8
	wasiEFAULT       = 21
	wasiEINVAL       = 28
	wasiENOSYS       = 52
	wasiENOTDIR      = 54
	wasiENOTSUP      = 58
	wasiESPIPE       = 70
	wasiENOTCAPABLE  = 76
	wasiENAMETOOLONG = 37
)

var errnoToWASI = map[experimentalsys.Errno]uint32{
	experimentalsys.EACCES: 2, experimentalsys.EAGAIN: 6, experimentalsys.EBADF: 8,
	experimentalsys.EEXIST: 20, experimentalsys.EFAULT: 21, experimentalsys.EINTR: 27,
	experimentalsys.EINVAL: 28, experimentalsys.EIO: 29, experimentalsys.EISDIR: 31,
	experimentalsys.ELOOP: 32, experimentalsys.ENAMETOOLONG: 37, experimentalsys.ENOENT: 44,
	experimentalsys.ENOSYS: 52, experimentalsys.ENOTDIR: 54, experimentalsys.ERANGE: 68,
	experimentalsys.ENOTEMPTY: 55, experimentalsys.ENOTSOCK: 57, experimentalsys.ENOTSUP: 58,
	experimentalsys.EPERM: 63, experimentalsys.EROFS: 69,
}

func (w *wasiHost) errno(e experimentalsys.Errno) uint32 {
	if e == 0 {
		return 0
	}
	if e == experimentalsys.EIO && w.gfs != nil {
		if r := w.gfs.takeRefusal(); r != refusedNone {
			return r.errno()
		}
	}
	if n, ok := errnoToWASI[e]; ok {
		return n
	}
	return wasiErrnoIO
}

// newWASIHost makes the WASI state: stdio, and fsys preopened as "/".
func newWASIHost(fsys experimentalsys.FS, gfs *guestFS, args, env []string, stdout, stderr io.Writer) *wasiHost {
	w := &wasiHost{fsys: fsys, gfs: gfs, args: args, env: env, stdout: stdout, stderr: stderr,
		fds: map[uint32]*wasiFD{}, realRes: 1000}
	for i := range 3 {
		w.fds[uint32(i)] = &wasiFD{stdio: i}
	}
	if root, errno := fsys.OpenFile(".", experimentalsys.O_RDONLY|experimentalsys.O_DIRECTORY, 0); errno == 0 {
		w.fds[3] = &wasiFD{file: root, stdio: -1, isDir: true, preopen: "/"}
	}
	return w
}

// close closes every descriptor still open.
func (w *wasiHost) close() {
	for fd, f := range w.fds {
		if f.file != nil {
			f.file.Close()
		}
		delete(w.fds, fd)
	}
}

// memory helpers: a pointer outside the memory is EFAULT.

func memRange(mem []byte, ptr, n uint64) ([]byte, bool) {
	if ptr+n > uint64(len(mem)) || ptr+n < ptr {
		return nil, false
	}
	return mem[ptr : ptr+n], true
}

func putU32(mem []byte, ptr uint64, v uint32) bool {
	b, ok := memRange(mem, ptr, 4)
	if ok {
		binary.LittleEndian.PutUint32(b, v)
	}
	return ok
}

func putU64(mem []byte, ptr uint64, v uint64) bool {
	b, ok := memRange(mem, ptr, 8)
	if ok {
		binary.LittleEndian.PutUint64(b, v)
	}
	return ok
}

func okOr(ok bool) uint32 {
	if ok {
		return 0
	}
	return wasiEFAULT
}

// iovecs reads n (ptr, len) pairs at p.
func iovecs(mem []byte, p, n uint64) ([][]byte, bool) {
	raw, ok := memRange(mem, p, n*8)
	if !ok {
		return nil, false
	}
	out := make([][]byte, 0, n)
	for i := uint64(0); i < n; i++ {
		ptr := uint64(binary.LittleEndian.Uint32(raw[i*8:]))
		l := uint64(binary.LittleEndian.Uint32(raw[i*8+4:]))
		b, ok := memRange(mem, ptr, l)
		if !ok {
			return nil, false
		}
		out = append(out, b)
	}
	return out, true
}

func (w *wasiHost) fd(a uint64) (*wasiFD, uint32) {
	f, ok := w.fds[uint32(a)]
	if !ok {
		return nil, wasiEBADF
	}
	return f, 0
}

// guestPath reads a path argument and resolves it against the directory
// descriptor: the path handed to the file system, relative to its root.
// A path that climbs out of the root is not capable.
func (w *wasiHost) guestPath(mem []byte, dirfd, p, n uint64) (string, uint32) {
	d, e := w.fd(dirfd)
	if e != 0 {
		return "", e
	}
	if !d.isDir || d.file == nil {
		return "", wasiENOTDIR
	}
	b, ok := memRange(mem, p, n)
	if !ok {
		return "", wasiEFAULT
	}
	rel := string(b)
	if strings.IndexByte(rel, 0) >= 0 {
		return "", wasiEINVAL
	}
	if strings.HasPrefix(rel, "/") {
		return "", wasiENOTCAPABLE
	}
	depth := 0 // below the directory of dirfd: ".." may not climb out of it
	for _, c := range strings.Split(rel, "/") {
		switch c {
		case "", ".":
		case "..":
			if depth--; depth < 0 {
				return "", wasiENOTCAPABLE
			}
		default:
			depth++
		}
	}
	full := rel
	if d.path != "" {
		full = d.path + "/" + rel
	}
	if full == "" {
		full = "."
	}
	return full, 0
}

func fileType(m fs.FileMode) uint8 {
	switch {
	case m.IsDir():
		return 3
	case m&fs.ModeSymlink != 0:
		return 7
	case m&fs.ModeCharDevice != 0:
		return 2
	case m&fs.ModeDevice != 0:
		return 1
	case m&fs.ModeSocket != 0:
		return 6
	case m&fs.ModeNamedPipe != 0, m&fs.ModeIrregular != 0:
		return 0
	}
	return 4
}

func putFilestat(mem []byte, p uint64, st sys.Stat_t) uint32 {
	b, ok := memRange(mem, p, 64)
	if !ok {
		return wasiEFAULT
	}
	clear(b)
	binary.LittleEndian.PutUint64(b[0:], st.Dev)
	binary.LittleEndian.PutUint64(b[8:], st.Ino)
	b[16] = fileType(st.Mode)
	binary.LittleEndian.PutUint64(b[24:], st.Nlink)
	binary.LittleEndian.PutUint64(b[32:], uint64(st.Size))
	binary.LittleEndian.PutUint64(b[40:], uint64(st.Atim))
	binary.LittleEndian.PutUint64(b[48:], uint64(st.Mtim))
	binary.LittleEndian.PutUint64(b[56:], uint64(st.Ctim))
	return 0
}

// Rights fd_fdstat_get reports, as wazero does (programs pass them back
// to path_open, whose access mode follows fd_read and fd_write): files may
// be read, written, sought; directories hold files (and are not written
// or sought themselves); a character device (stdio) is not sought.
const (
	fileRights = 1<<0 | 1<<1 | 1<<2 | 1<<3 | 1<<4 | 1<<5 | 1<<6 | 1<<7 | 1<<8 | 1<<21 | 1<<22 | 1<<23 | 1<<27
	dirRights  = 1<<0 | 1<<3 | 1<<4 | 1<<9 | 1<<10 | 1<<11 | 1<<12 | 1<<13 | 1<<14 | 1<<15 | 1<<16 | 1<<17 |
		1<<18 | 1<<19 | 1<<20 | 1<<21 | 1<<23 | 1<<24 | 1<<25 | 1<<26
	charRights = fileRights &^ (1<<2 | 1<<5)
)

// WASI rights that make path_open ask for write access.
const (
	rightFdRead  = 1 << 1
	rightFdWrite = 1 << 6
)

// copyIO reads into or writes from bufs at the descriptor's position or
// (at) at off, and returns the bytes moved. A failure after some bytes
// moved ends the transfer with what moved, as a short read or write.
func (w *wasiHost) copyIO(f *wasiFD, bufs [][]byte, off int64, at, write bool) (uint64, uint32) {
	var total uint64
	for _, b := range bufs {
		var n int
		var e experimentalsys.Errno
		switch {
		case f.stdio == 1 && write:
			n, _ = w.stdout.Write(b)
		case f.stdio == 2 && write:
			n, _ = w.stderr.Write(b)
		case f.stdio == 0 && write:
			return total, wasiEBADF
		case f.stdio >= 0:
			return total, 0 // stdin is empty; stdout/stderr read nothing
		case f.isDir:
			return total, w.errno(experimentalsys.EISDIR)
		case at && write:
			n, e = f.file.Pwrite(b, off+int64(total))
		case write:
			n, e = f.file.Write(b)
		case at:
			n, e = f.file.Pread(b, off+int64(total))
		default:
			n, e = f.file.Read(b)
		}
		total += uint64(n)
		if e != 0 {
			if total > 0 {
				break
			}
			return 0, w.errno(e)
		}
		if n < len(b) {
			break
		}
	}
	return total, 0
}

// transfer is fd_read, fd_write (fd, iovs, iovs_len, n_ptr) and, at an
// offset, fd_pread, fd_pwrite (fd, iovs, iovs_len, offset, n_ptr).
func (w *wasiHost) transfer(mem []byte, a []uint64, write, at bool) uint32 {
	f, e := w.fd(a[0])
	if e != 0 {
		return e
	}
	nPtr, off := a[3], int64(0)
	if at {
		if f.stdio >= 0 {
			return wasiESPIPE
		}
		if off = int64(a[3]); off < 0 {
			return wasiEINVAL
		}
		nPtr = a[4]
	}
	bufs, ok := iovecs(mem, a[1], a[2])
	if !ok {
		return wasiEFAULT
	}
	n, e := w.copyIO(f, bufs, off, at, write)
	if e != 0 {
		return e
	}
	return okOr(putU32(mem, nPtr, uint32(n)))
}

// listing reads a directory whole, with "." and "..", for fd_readdir.
func (w *wasiHost) listing(f *wasiFD) uint32 {
	dir, e := w.fsys.OpenFile(orDot(f.path), experimentalsys.O_RDONLY|experimentalsys.O_DIRECTORY, 0)
	if e != 0 {
		return w.errno(e)
	}
	defer dir.Close()
	ents, e := dir.Readdir(-1)
	if e != 0 {
		return w.errno(e)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	ino, _ := f.file.Ino()
	f.dirents = append([]experimentalsys.Dirent{{Name: ".", Type: fs.ModeDir, Ino: ino}, {Name: "..", Type: fs.ModeDir}}, ents...)
	return 0
}

func orDot(p string) string {
	if p == "" {
		return "."
	}
	return p
}

// openFlags interprets path_open's flags as wazero does, so that both
// engines open the same way: rights were dropped from later WASI, and only
// fd_read and fd_write among them choose the access mode; without either,
// creating, truncating or appending opens for reading and writing.
func (w *wasiHost) openFlags(dirflags, oflags uint64, rights uint64, fdflags uint64) experimentalsys.Oflag {
	var fl experimentalsys.Oflag
	if dirflags&1 == 0 {
		fl |= experimentalsys.O_NOFOLLOW
	}
	if oflags&2 != 0 {
		fl |= experimentalsys.O_DIRECTORY
	} else if oflags&4 != 0 {
		fl |= experimentalsys.O_EXCL
	}
	mode := experimentalsys.O_RDONLY
	if oflags&8 != 0 {
		fl |= experimentalsys.O_TRUNC
		mode = experimentalsys.O_RDWR
	}
	if oflags&1 != 0 {
		fl |= experimentalsys.O_CREAT
		mode = experimentalsys.O_RDWR
	}
	if fdflags&4 != 0 {
		fl |= experimentalsys.O_NONBLOCK
	}
	if fdflags&1 != 0 {
		fl |= experimentalsys.O_APPEND
		mode = experimentalsys.O_RDWR
	}
	if fdflags&2 != 0 {
		fl |= experimentalsys.O_DSYNC
	}
	if fdflags&8 != 0 {
		fl |= experimentalsys.O_RSYNC
	}
	if fdflags&16 != 0 {
		fl |= experimentalsys.O_SYNC
	}
	switch rw := uint64(rightFdRead | rightFdWrite); {
	case rights&rw == rw:
		fl |= experimentalsys.O_RDWR
	case rights&rightFdWrite != 0:
		fl |= experimentalsys.O_WRONLY
	case rights&rightFdRead != 0:
	default:
		fl |= mode
	}
	return fl
}

func (w *wasiHost) nextFD() uint32 {
	for fd := uint32(3); ; fd++ {
		if _, used := w.fds[fd]; !used {
			return fd
		}
	}
}

// utimes turns fstflags into the times Utimens takes.
func (w *wasiHost) utimes(atim, mtim, flags uint64) (int64, int64, uint32) {
	if flags&1 != 0 && flags&2 != 0 || flags&4 != 0 && flags&8 != 0 {
		return 0, 0, wasiEINVAL
	}
	a, m := int64(experimentalsys.UTIME_OMIT), int64(experimentalsys.UTIME_OMIT)
	now := w.walltime()
	switch {
	case flags&1 != 0:
		a = int64(atim)
	case flags&2 != 0:
		a = now
	}
	switch {
	case flags&4 != 0:
		m = int64(mtim)
	case flags&8 != 0:
		m = now
	}
	return a, m, 0
}

func strsSizes(mem []byte, list []string, countPtr, sizePtr uint64) uint32 {
	size := 0
	for _, s := range list {
		size += len(s) + 1
	}
	return okOr(putU32(mem, countPtr, uint32(len(list))) && putU32(mem, sizePtr, uint32(size)))
}

func strsGet(mem []byte, list []string, ptrs, buf uint64) uint32 {
	for i, s := range list {
		b, ok := memRange(mem, buf, uint64(len(s)+1))
		if !ok || !putU32(mem, ptrs+uint64(i)*4, uint32(buf)) {
			return wasiEFAULT
		}
		copy(b, s)
		b[len(s)] = 0
		buf += uint64(len(s) + 1)
	}
	return 0
}

// p32 and p64 spell signatures: false is i32, true is i64.
const (
	p32 = false
	p64 = true
)

func sig(ps ...bool) []bool { return ps }

// wasip1Functions are the WASI preview-1 functions of wasiHost, by name:
// the same set wazero offers (wasiFunctions).
var wasip1Functions = map[string]wasiFunc{
	"args_get": {sig(p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		return strsGet(mem, w.args, a[0], a[1])
	}},
	"args_sizes_get": {sig(p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		return strsSizes(mem, w.args, a[0], a[1])
	}},
	"environ_get": {sig(p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		return strsGet(mem, w.env, a[0], a[1])
	}},
	"environ_sizes_get": {sig(p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		return strsSizes(mem, w.env, a[0], a[1])
	}},
	"clock_res_get": {sig(p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		switch uint32(a[0]) {
		case 0:
			return okOr(putU64(mem, a[1], w.realRes))
		case 1:
			return okOr(putU64(mem, a[1], 1))
		}
		return wasiEINVAL
	}},
	"clock_time_get": {sig(p32, p64, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		switch uint32(a[0]) {
		case 0:
			return okOr(putU64(mem, a[2], uint64(w.walltime())))
		case 1:
			return okOr(putU64(mem, a[2], uint64(w.nanotime())))
		}
		return wasiEINVAL
	}},
	"fd_advise": {sig(p32, p64, p64, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		f, e := w.fd(a[0])
		if e != 0 {
			return e
		}
		if uint32(a[3]) > 5 {
			return wasiEINVAL
		}
		if f.isDir {
			return wasiEBADF
		}
		return 0
	}},
	"fd_allocate": {sig(p32, p64, p64), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		f, e := w.fd(a[0])
		if e != 0 {
			return e
		}
		if f.file == nil || f.isDir {
			return wasiEBADF
		}
		end := int64(a[1] + a[2])
		if end < 0 || int64(a[1]) < 0 || int64(a[2]) <= 0 {
			return wasiEINVAL
		}
		st, errno := f.file.Stat()
		if errno != 0 {
			return w.errno(errno)
		}
		if st.Size < end {
			return w.errno(f.file.Truncate(end))
		}
		return 0
	}},
	"fd_close": {sig(p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		f, e := w.fd(a[0])
		if e != 0 {
			return e
		}
		delete(w.fds, uint32(a[0]))
		if f.file != nil {
			return w.errno(f.file.Close())
		}
		return 0
	}},
	"fd_datasync": {sig(p32), false, syncFD(experimentalsys.File.Datasync)},
	"fd_fdstat_get": {sig(p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		f, e := w.fd(a[0])
		if e != 0 {
			return e
		}
		b, ok := memRange(mem, a[1], 24)
		if !ok {
			return wasiEFAULT
		}
		clear(b)
		ft, flags := uint8(2), f.fdflags // stdio: character devices
		if f.file != nil {
			st, errno := f.file.Stat()
			if errno != 0 {
				return w.errno(errno)
			}
			ft = fileType(st.Mode)
			if f.file.IsAppend() {
				flags |= 1
			}
		}
		b[0] = ft
		binary.LittleEndian.PutUint16(b[2:], flags)
		base, inherit := uint64(fileRights), uint64(0)
		switch ft {
		case 3:
			base, inherit = dirRights, fileRights|dirRights
		case 2:
			base = charRights
		}
		binary.LittleEndian.PutUint64(b[8:], base)
		binary.LittleEndian.PutUint64(b[16:], inherit)
		return 0
	}},
	"fd_fdstat_set_flags": {sig(p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		f, e := w.fd(a[0])
		if e != 0 {
			return e
		}
		flags := uint16(a[1])
		if f.file != nil && !f.isDir {
			if errno := f.file.SetAppend(flags&1 != 0); errno != 0 {
				return w.errno(errno)
			}
		}
		f.fdflags = flags &^ 1
		return 0
	}},
	"fd_fdstat_set_rights": {sig(p32, p64, p64), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		_, e := w.fd(a[0])
		return e
	}},
	"fd_filestat_get": {sig(p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		f, e := w.fd(a[0])
		if e != 0 {
			return e
		}
		if f.file == nil {
			return putFilestat(mem, a[1], sys.Stat_t{Mode: fs.ModeDevice | fs.ModeCharDevice, Nlink: 1})
		}
		st, errno := f.file.Stat()
		if errno != 0 {
			return w.errno(errno)
		}
		return putFilestat(mem, a[1], st)
	}},
	"fd_filestat_set_size": {sig(p32, p64), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		f, e := w.fd(a[0])
		if e != 0 {
			return e
		}
		if f.file == nil || f.isDir {
			return wasiEBADF
		}
		return w.errno(f.file.Truncate(int64(a[1])))
	}},
	"fd_filestat_set_times": {sig(p32, p64, p64, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		f, e := w.fd(a[0])
		if e != 0 {
			return e
		}
		at, mt, e := w.utimes(a[1], a[2], a[3])
		if e != 0 {
			return e
		}
		if f.file == nil {
			return 0
		}
		return w.errno(f.file.Utimens(at, mt))
	}},
	"fd_pread": {sig(p32, p32, p32, p64, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		return w.transfer(mem, a, false, true)
	}},
	"fd_prestat_get": {sig(p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		f, e := w.fd(a[0])
		if e != 0 {
			return e
		}
		if f.preopen == "" {
			return wasiEBADF
		}
		b, ok := memRange(mem, a[1], 8)
		if !ok {
			return wasiEFAULT
		}
		clear(b)
		binary.LittleEndian.PutUint32(b[4:], uint32(len(f.preopen)))
		return 0
	}},
	"fd_prestat_dir_name": {sig(p32, p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		f, e := w.fd(a[0])
		if e != 0 {
			return e
		}
		if f.preopen == "" {
			return wasiEBADF
		}
		if a[2] < uint64(len(f.preopen)) {
			return wasiENAMETOOLONG
		}
		b, ok := memRange(mem, a[1], uint64(len(f.preopen)))
		if !ok {
			return wasiEFAULT
		}
		copy(b, f.preopen)
		return 0
	}},
	"fd_pwrite": {sig(p32, p32, p32, p64, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		return w.transfer(mem, a, true, true)
	}},
	"fd_read": {sig(p32, p32, p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		return w.transfer(mem, a, false, false)
	}},
	"fd_readdir": {sig(p32, p32, p32, p64, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		f, e := w.fd(a[0])
		if e != 0 {
			return e
		}
		if !f.isDir || f.file == nil {
			return wasiENOTDIR
		}
		buf, ok := memRange(mem, a[1], a[2])
		if !ok {
			return wasiEFAULT
		}
		cookie := a[3]
		if cookie == 0 || f.dirents == nil {
			if e := w.listing(f); e != 0 {
				return e
			}
		}
		if cookie > uint64(len(f.dirents)) {
			return wasiEINVAL
		}
		used := 0
		var ent [24]byte
		for i := cookie; i < uint64(len(f.dirents)) && used < len(buf); i++ {
			d := f.dirents[i]
			binary.LittleEndian.PutUint64(ent[0:], i+1)
			binary.LittleEndian.PutUint64(ent[8:], d.Ino)
			binary.LittleEndian.PutUint32(ent[16:], uint32(len(d.Name)))
			ent[20], ent[21], ent[22], ent[23] = fileType(d.Type), 0, 0, 0
			used += copy(buf[used:], ent[:])
			used += copy(buf[used:], d.Name)
		}
		return okOr(putU32(mem, a[4], uint32(used)))
	}},
	"fd_renumber": {sig(p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		f, e := w.fd(a[0])
		if e != 0 {
			return e
		}
		to, e := w.fd(a[1])
		if e != 0 {
			return e
		}
		if uint32(a[0]) == uint32(a[1]) {
			return 0
		}
		if f.preopen != "" || to.preopen != "" {
			return wasiENOTSUP
		}
		if to.file != nil {
			to.file.Close()
		}
		w.fds[uint32(a[1])] = f
		delete(w.fds, uint32(a[0]))
		return 0
	}},
	"fd_seek": {sig(p32, p64, p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		f, e := w.fd(a[0])
		if e != 0 {
			return e
		}
		if f.stdio >= 0 {
			return wasiESPIPE
		}
		if f.isDir {
			return wasiEBADF
		}
		if a[2] > 2 {
			return wasiEINVAL
		}
		off, errno := f.file.Seek(int64(a[1]), int(a[2]))
		if errno != 0 {
			return w.errno(errno)
		}
		return okOr(putU64(mem, a[3], uint64(off)))
	}},
	"fd_sync": {sig(p32), false, syncFD(experimentalsys.File.Sync)},
	"fd_tell": {sig(p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		f, e := w.fd(a[0])
		if e != 0 {
			return e
		}
		if f.stdio >= 0 {
			return wasiESPIPE
		}
		if f.isDir {
			return wasiEBADF
		}
		off, errno := f.file.Seek(0, io.SeekCurrent)
		if errno != 0 {
			return w.errno(errno)
		}
		return okOr(putU64(mem, a[1], uint64(off)))
	}},
	"fd_write": {sig(p32, p32, p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		return w.transfer(mem, a, true, false)
	}},
	"path_create_directory": {sig(p32, p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		p, e := w.guestPath(mem, a[0], a[1], a[2])
		if e != 0 {
			return e
		}
		return w.errno(w.fsys.Mkdir(p, 0o700))
	}},
	"path_filestat_get": {sig(p32, p32, p32, p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		p, e := w.guestPath(mem, a[0], a[2], a[3])
		if e != 0 {
			return e
		}
		stat := w.fsys.Lstat
		if a[1]&1 != 0 {
			stat = w.fsys.Stat
		}
		st, errno := stat(p)
		if errno != 0 {
			return w.errno(errno)
		}
		return putFilestat(mem, a[4], st)
	}},
	"path_filestat_set_times": {sig(p32, p32, p32, p32, p64, p64, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		p, e := w.guestPath(mem, a[0], a[2], a[3])
		if e != 0 {
			return e
		}
		at, mt, e := w.utimes(a[4], a[5], a[6])
		if e != 0 {
			return e
		}
		if a[1]&1 == 0 {
			if st, errno := w.fsys.Lstat(p); errno == 0 && st.Mode&fs.ModeSymlink != 0 {
				return wasiENOSYS
			}
		}
		return w.errno(w.fsys.Utimens(p, at, mt))
	}},
	"path_link": {sig(p32, p32, p32, p32, p32, p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		from, e := w.guestPath(mem, a[0], a[2], a[3])
		if e != 0 {
			return e
		}
		to, e := w.guestPath(mem, a[4], a[5], a[6])
		if e != 0 {
			return e
		}
		return w.errno(w.fsys.Link(from, to))
	}},
	"path_open": {sig(p32, p32, p32, p32, p32, p64, p64, p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		p, e := w.guestPath(mem, a[0], a[2], a[3])
		if e != 0 {
			return e
		}
		if _, ok := memRange(mem, a[8], 4); !ok {
			return wasiEFAULT
		}
		if a[3] == 0 {
			return wasiEINVAL
		}
		fl := w.openFlags(a[1], a[4], a[5], a[7])
		if fl&experimentalsys.O_DIRECTORY != 0 && fl&experimentalsys.O_CREAT != 0 {
			return wasiEINVAL // path_create_directory makes directories
		}
		file, errno := w.fsys.OpenFile(p, fl, 0o600)
		if errno != 0 {
			return w.errno(errno)
		}
		isDir, errno := file.IsDir()
		if errno != 0 {
			file.Close()
			return w.errno(errno)
		}
		if fl&experimentalsys.O_DIRECTORY != 0 && !isDir {
			file.Close()
			return wasiENOTDIR
		}
		fd := w.nextFD()
		w.fds[fd] = &wasiFD{file: file, stdio: -1, isDir: isDir, path: cleanRel(p), fdflags: uint16(a[7]) &^ 1}
		putU32(mem, a[8], fd)
		return 0
	}},
	"path_readlink": {sig(p32, p32, p32, p32, p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		p, e := w.guestPath(mem, a[0], a[1], a[2])
		if e != 0 {
			return e
		}
		target, errno := w.fsys.Readlink(p)
		if errno != 0 {
			return w.errno(errno)
		}
		b, ok := memRange(mem, a[3], a[4])
		if !ok {
			return wasiEFAULT
		}
		n := copy(b, target)
		return okOr(putU32(mem, a[5], uint32(n)))
	}},
	"path_remove_directory": {sig(p32, p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		p, e := w.guestPath(mem, a[0], a[1], a[2])
		if e != 0 {
			return e
		}
		return w.errno(w.fsys.Rmdir(p))
	}},
	"path_rename": {sig(p32, p32, p32, p32, p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		from, e := w.guestPath(mem, a[0], a[1], a[2])
		if e != 0 {
			return e
		}
		to, e := w.guestPath(mem, a[3], a[4], a[5])
		if e != 0 {
			return e
		}
		return w.errno(w.fsys.Rename(from, to))
	}},
	"path_symlink": {sig(p32, p32, p32, p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		old, ok := memRange(mem, a[0], a[1])
		if !ok {
			return wasiEFAULT
		}
		p, e := w.guestPath(mem, a[2], a[3], a[4])
		if e != 0 {
			return e
		}
		return w.errno(w.fsys.Symlink(string(old), p))
	}},
	"path_unlink_file": {sig(p32, p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		p, e := w.guestPath(mem, a[0], a[1], a[2])
		if e != 0 {
			return e
		}
		return w.errno(w.fsys.Unlink(p))
	}},
	"poll_oneoff": {sig(p32, p32, p32, p32), false, (*wasiHost).pollOneoff},
	"proc_exit": {sig(p32), true, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		w.exit = &errProcExit{code: uint32(a[0])}
		return 0
	}},
	"proc_raise":  {sig(p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 { return wasiENOSYS }},
	"sched_yield": {sig(), false, func(w *wasiHost, mem []byte, a []uint64) uint32 { return 0 }},
	"random_get": {sig(p32, p32), false, func(w *wasiHost, mem []byte, a []uint64) uint32 {
		b, ok := memRange(mem, a[0], a[1])
		if !ok {
			return wasiEFAULT
		}
		if _, err := io.ReadFull(w.random, b); err != nil {
			return wasiErrnoIO
		}
		return 0
	}},
	"sock_accept":   {sig(p32, p32, p32), false, notSocket},
	"sock_recv":     {sig(p32, p32, p32, p32, p32, p32), false, notSocket},
	"sock_send":     {sig(p32, p32, p32, p32, p32), false, notSocket},
	"sock_shutdown": {sig(p32, p32), false, notSocket},
}

// notSocket: the guest has no sockets, so no descriptor is one (EBADF,
// as wazero answers).
func notSocket(w *wasiHost, mem []byte, a []uint64) uint32 {
	return wasiEBADF
}

func cleanRel(p string) string {
	c := path.Clean("/" + p)
	return strings.TrimPrefix(c, "/")
}

// pollOneoff answers file subscriptions at once (files are always ready)
// and sleeps for the nearest clock subscription otherwise.
func (w *wasiHost) pollOneoff(mem []byte, a []uint64) uint32 {
	in, out, n := a[0], a[1], a[2]
	if n == 0 {
		return wasiEINVAL
	}
	subs, ok := memRange(mem, in, n*48)
	if !ok {
		return wasiEFAULT
	}
	evs, ok := memRange(mem, out, n*32)
	if !ok {
		return wasiEFAULT
	}
	type clockSub struct {
		i       uint64
		timeout int64
	}
	var clocks []clockSub
	nev := uint64(0)
	event := func(userdata []byte, errno uint16, typ byte) {
		e := evs[nev*32 : nev*32+32]
		clear(e)
		copy(e[0:8], userdata)
		binary.LittleEndian.PutUint16(e[8:], errno)
		e[10] = typ
		nev++
	}
	for i := uint64(0); i < n; i++ {
		s := subs[i*48 : i*48+48]
		switch tag := s[8]; tag {
		case 0: // clock
			id := binary.LittleEndian.Uint32(s[16:])
			timeout := int64(binary.LittleEndian.Uint64(s[24:]))
			flags := binary.LittleEndian.Uint16(s[40:])
			if id != 0 && id != 1 {
				event(s[0:8], wasiEINVAL, 0)
				continue
			}
			if flags&1 != 0 { // absolute
				now := w.nanotime()
				if id == 0 {
					now = w.walltime()
				}
				timeout -= now
			}
			clocks = append(clocks, clockSub{i, max(timeout, 0)})
		case 1, 2: // fd_read, fd_write
			fd := binary.LittleEndian.Uint32(s[16:])
			errno := uint16(0)
			if _, ok := w.fds[fd]; !ok {
				errno = wasiEBADF
			}
			event(s[0:8], errno, tag)
		default:
			event(s[0:8], wasiEINVAL, tag)
		}
	}
	if nev == 0 && len(clocks) > 0 {
		sort.SliceStable(clocks, func(i, j int) bool { return clocks[i].timeout < clocks[j].timeout })
		w.nanosleep(clocks[0].timeout)
		for _, c := range clocks {
			if c.timeout == clocks[0].timeout {
				event(subs[c.i*48:c.i*48+8], 0, 0)
			}
		}
	}
	return okOr(putU32(mem, a[3], uint32(nev)))
}

// syncFD is fd_sync or fd_datasync: sync on the descriptor's file (stdio
// has nothing to sync).
func syncFD(sync func(experimentalsys.File) experimentalsys.Errno) func(*wasiHost, []byte, []uint64) uint32 {
	return func(w *wasiHost, mem []byte, a []uint64) uint32 {
		f, e := w.fd(a[0])
		if e != 0 || f.file == nil {
			return e
		}
		return w.errno(sync(f.file))
	}
}
