package isolate

import (
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/sys"
)

// errOutputLimit is what the file system returns when a write or create
// under /output/ would exceed MaxOutput or MaxOutputFiles. wazero v1.12's
// file-system errno set has no ENOSPC or EDQUOT, so it is EIO here, and the
// refusal is recorded (guestFS.refuse); the WASI wrappers in wasi.go turn it
// into ENOSPC or EDQUOT before the guest sees it.
const errOutputLimit = experimentalsys.EIO

// refusal says which output limit refused the last operation.
type refusal int

const (
	refusedNone    refusal = iota
	refusedBytes           // MaxOutput: ENOSPC
	refusedFiles           // MaxOutputFiles: EDQUOT
	refusedHandles         // maxOpenHandles: EMFILE
)

// errno is the WASI errno the guest is told.
func (r refusal) errno() uint32 {
	switch r {
	case refusedFiles:
		return wasiErrnoDquot
	case refusedHandles:
		return wasiErrnoMfile
	}
	return wasiErrnoNospc
}

// guestFS is the whole file system the guest sees, mounted at "/":
//
//	/input/NAME       read-only, the bytes the host supplied
//	/input/DIR/NAME   read-only, a file of a directory input (vfs_dir.go)
//	/output/NAME      writable, flat, bounded in total bytes and file count
//
// Nothing else exists. No host file is opened on the guest's behalf while
// it runs; output bytes live in an output area (outputarea.go) and are
// handed back to the caller when the run ends.
//
// The budget is an invariant over what the guest holds, not over names: a
// file is held while it is named under /output/ or open through any
// handle (an unlinked or renamed-over file that is still open keeps its
// bytes, as on a disk), and
//
//	used  = the sum of the sizes of the held files  ≤ MaxOutput
//	held  = the number of held files                ≤ MaxOutputFiles
//	handles open at once                           ≤ maxOpenHandles
//
// after every operation (TestGuestFSBudgetProperty drives random sequences
// of every file operation against a model and checks it after each step).
type guestFS struct {
	experimentalsys.UnimplementedFS

	mu       sync.Mutex
	inputs   map[string]*inputSource // by name, "DIR/FILE" in a directory
	dirs     map[string][]string     // directory inputs: their files, sorted; read-only
	outputs  map[string]*outNode     // the named files
	area     *outputArea
	used     int64 // bytes of the held files
	held     int   // held files: named, or open after losing their name
	handles  int   // open handles of any kind
	maxBytes int64
	maxFiles int
	// bytesHit and filesHit say a limit refused something during the
	// run (for the report); last is the refusal of the current WASI call
	// (for the errno the guest sees).
	bytesHit, filesHit bool
	last               refusal
	now                func() int64
	nextIno            sys.Inode
	inoOf              map[string]sys.Inode
	// broken is set when the output area failed (an I/O error of its
	// store): every later output operation fails with EIO.
	broken error
}

// maxOpenHandles bounds the handles the guest holds open at once (each
// costs the worker memory, and wazero's descriptor table has no bound of
// its own). Opening one more fails with EMFILE.
const maxOpenHandles = 1024

// outNode is one output file.
type outNode struct {
	size   int64
	blocks []uint32 // its blocks in the output area: ceil(size/block) of them
	mtime  int64
	ino    sys.Inode
	named  bool // it has a name under /output/
	open   int  // handles open on it
}

const (
	inoRoot sys.Inode = iota + 1
	inoInput
	inoOutput
	inoFirstFile
)

// newGuestFS makes the file system of one run. The output area is the
// caller's: it must be sized by areaLayout for maxBytes and maxFiles.
func newGuestFS(inputs map[string]*inputSource, area *outputArea, maxBytes int64, maxFiles int, now func() int64) *guestFS {
	g := &guestFS{
		inputs:   inputs,
		outputs:  map[string]*outNode{},
		area:     area,
		maxBytes: maxBytes,
		maxFiles: maxFiles,
		now:      now,
		nextIno:  inoFirstFile,
		inoOf:    map[string]sys.Inode{},
	}
	// The parent checked the names (inputDirs); a name that is both a
	// file and a directory would only hide the file.
	g.dirs, _ = inputDirs(sortedKeys(inputs))
	// Inode numbers are assigned in name order so that they are the same on
	// every run (determinism).
	names := sortedKeys(inputs)
	for d := range g.dirs {
		names = append(names, d)
	}
	sort.Strings(names)
	for _, n := range names {
		g.inoOf["input/"+n] = g.nextIno
		g.nextIno++
	}
	return g
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// node kinds
type kind int

const (
	kNone kind = iota
	kRoot
	kInputDir
	kOutputDir
	kInput
	kOutput
	kNotDir      // a path continuing below a file
	kInputSubdir // /input/DIR of a directory input
)

// resolve walks p under the guest root and says what it names. ".." never
// climbs above "/", and a path that continues below a file (even with "..",
// as in "input/data/..") names nothing: kNotDir. A file of a directory
// input is kInput named "DIR/FILE".
func (g *guestFS) resolve(p string) (kind, string) {
	var stack []string
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." {
			continue
		}
		switch {
		case len(stack) == 3 || len(stack) == 2 && !g.isInputDir(stack):
			// Below /input/NAME, /input/DIR/NAME or /output/NAME:
			// those are files.
			return kNotDir, ""
		case c == "..":
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			continue
		case len(stack) == 1 && stack[0] != "input" && stack[0] != "output":
			return kNone, "" // below a name that does not exist
		}
		stack = append(stack, c)
	}
	switch len(stack) {
	case 0:
		return kRoot, ""
	case 1:
		switch stack[0] {
		case "input":
			return kInputDir, ""
		case "output":
			return kOutputDir, ""
		}
	case 2:
		switch {
		case g.isInputDir(stack):
			return kInputSubdir, stack[1]
		case stack[0] == "input":
			return kInput, stack[1]
		case stack[0] == "output":
			return kOutput, stack[1]
		}
	case 3:
		return kInput, stack[1] + "/" + stack[2]
	}
	return kNone, ""
}

// isInputDir reports whether the path components name a directory input.
func (g *guestFS) isInputDir(stack []string) bool {
	if len(stack) != 2 || stack[0] != "input" {
		return false
	}
	_, ok := g.dirs[stack[1]]
	return ok
}

func isWrite(flag experimentalsys.Oflag) bool {
	return flag&(experimentalsys.O_WRONLY|experimentalsys.O_RDWR) != 0 ||
		flag&(experimentalsys.O_TRUNC|experimentalsys.O_APPEND|experimentalsys.O_CREAT) != 0
}

// OpenFile implements experimentalsys.FS.
func (g *guestFS) OpenFile(p string, flag experimentalsys.Oflag, _ fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f, errno := g.openLocked(p, flag)
	if errno == 0 {
		g.handles++
	}
	return f, errno
}

func (g *guestFS) openLocked(p string, flag experimentalsys.Oflag) (experimentalsys.File, experimentalsys.Errno) {
	k, name := g.resolve(p)
	if g.handles >= maxOpenHandles && k != kNone && k != kNotDir {
		return nil, g.refuse(refusedHandles)
	}
	switch k {
	case kRoot, kInputDir, kOutputDir, kInputSubdir:
		if flag&(experimentalsys.O_WRONLY|experimentalsys.O_RDWR|experimentalsys.O_TRUNC) != 0 {
			return nil, experimentalsys.EISDIR
		}
		if flag&experimentalsys.O_CREAT != 0 && flag&experimentalsys.O_EXCL != 0 {
			return nil, experimentalsys.EEXIST
		}
		return &dirFile{g: g, k: k, name: name}, 0
	case kInput:
		src, ok := g.inputs[name]
		if !ok {
			if flag&experimentalsys.O_CREAT != 0 {
				return nil, experimentalsys.EROFS
			}
			return nil, experimentalsys.ENOENT
		}
		if flag&experimentalsys.O_CREAT != 0 && flag&experimentalsys.O_EXCL != 0 {
			return nil, experimentalsys.EEXIST
		}
		if isWrite(flag) {
			return nil, experimentalsys.EROFS
		}
		if flag&experimentalsys.O_DIRECTORY != 0 {
			return nil, experimentalsys.ENOTDIR
		}
		return &inFile{g: g, src: src, ino: g.inoOf["input/"+name]}, 0
	case kOutput:
		n, ok := g.outputs[name]
		if !ok {
			if flag&experimentalsys.O_CREAT == 0 {
				return nil, experimentalsys.ENOENT
			}
			if len(name) > 255 {
				return nil, experimentalsys.ENAMETOOLONG
			}
			if flag&experimentalsys.O_DIRECTORY != 0 {
				return nil, experimentalsys.ENOTDIR
			}
			if g.held >= g.maxFiles {
				return nil, g.refuse(refusedFiles)
			}
			n = &outNode{mtime: g.now(), ino: g.nextIno, named: true}
			g.nextIno++
			g.outputs[name] = n
			g.held++
		} else if flag&experimentalsys.O_CREAT != 0 && flag&experimentalsys.O_EXCL != 0 {
			return nil, experimentalsys.EEXIST
		}
		if flag&experimentalsys.O_DIRECTORY != 0 {
			return nil, experimentalsys.ENOTDIR
		}
		f := &outFile{g: g, n: n,
			read:   flag&experimentalsys.O_WRONLY == 0,
			write:  flag&(experimentalsys.O_WRONLY|experimentalsys.O_RDWR) != 0,
			append: flag&experimentalsys.O_APPEND != 0}
		if flag&experimentalsys.O_TRUNC != 0 && f.write {
			if errno := g.resize(n, 0); errno != 0 {
				return nil, errno
			}
			n.mtime = g.now()
		}
		n.open++
		return f, 0
	}
	if k == kNotDir {
		return nil, experimentalsys.ENOTDIR
	}
	// Anything else (a name outside /input and /output) does not exist;
	// creating it in the read-only root is refused.
	if flag&experimentalsys.O_CREAT != 0 {
		if k2, _ := g.resolve(path.Dir(path.Clean("/" + p))); k2 == kRoot {
			return nil, experimentalsys.EROFS
		}
	}
	return nil, experimentalsys.ENOENT
}

// closeHandle ends one open handle; n is the output it was open on, if any.
func (g *guestFS) closeHandle(n *outNode) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.handles--
	if n != nil {
		n.open--
		g.releaseIfUnheld(n)
	}
}

// releaseIfUnheld gives back the bytes and the file slot of a file that
// has neither a name nor an open handle any more; g.mu is held.
func (g *guestFS) releaseIfUnheld(n *outNode) {
	if n.named || n.open > 0 {
		return
	}
	g.used -= n.size
	g.held--
	if err := g.area.release(n.blocks); err != nil {
		g.fail(err)
	}
	n.blocks, n.size = nil, 0
}

// fail records that the output area failed; g.mu is held.
func (g *guestFS) fail(err error) {
	if g.broken == nil {
		g.broken = err
	}
}

// resize makes n size bytes long, within the budget: growing reads zeros
// (the area's invariant), shrinking gives blocks back and zeroes the rest
// of the last one. g.mu is held.
func (g *guestFS) resize(n *outNode, size int64) experimentalsys.Errno {
	if g.broken != nil {
		return experimentalsys.EIO
	}
	switch {
	case size > n.size:
		if size-n.size > g.maxBytes-g.used {
			return g.refuse(refusedBytes)
		}
		want := (size + g.area.block - 1) / g.area.block
		for int64(len(n.blocks)) < want {
			b, err := g.area.alloc()
			if err != nil {
				// Cannot happen while the accounting holds (outputarea.go);
				// refused like a full budget, nothing changed but the
				// blocks, which stay with the file and are counted.
				return g.refuse(refusedBytes)
			}
			n.blocks = append(n.blocks, b)
		}
	case size < n.size:
		keep := (size + g.area.block - 1) / g.area.block
		if rest := size % g.area.block; rest != 0 {
			at := int64(n.blocks[keep-1])*g.area.block + rest
			if err := g.area.store.zero(at, g.area.block-rest); err != nil {
				g.fail(err)
				return experimentalsys.EIO
			}
		}
		if err := g.area.release(n.blocks[keep:]); err != nil {
			g.fail(err)
		}
		n.blocks = n.blocks[:keep:keep]
	}
	g.used += size - n.size
	n.size = size
	return 0
}

func (g *guestFS) statLocked(k kind, name string) (sys.Stat_t, experimentalsys.Errno) {
	now := g.now()
	switch k {
	case kRoot:
		return sys.Stat_t{Ino: inoRoot, Mode: fs.ModeDir | 0o555, Nlink: 4, Size: 4096, Atim: now, Mtim: now, Ctim: now}, 0
	case kInputDir:
		return sys.Stat_t{Ino: inoInput, Mode: fs.ModeDir | 0o555, Nlink: 2 + uint64(len(g.dirs)), Size: 4096, Atim: now, Mtim: now, Ctim: now}, 0
	case kInputSubdir:
		if _, ok := g.dirs[name]; !ok {
			return sys.Stat_t{}, experimentalsys.ENOENT
		}
		return sys.Stat_t{Ino: g.inoOf["input/"+name], Mode: fs.ModeDir | 0o555, Nlink: 2, Size: 4096, Atim: now, Mtim: now, Ctim: now}, 0
	case kOutputDir:
		return sys.Stat_t{Ino: inoOutput, Mode: fs.ModeDir | 0o755, Nlink: 2, Size: 4096, Atim: now, Mtim: now, Ctim: now}, 0
	case kInput:
		src, ok := g.inputs[name]
		if !ok {
			return sys.Stat_t{}, experimentalsys.ENOENT
		}
		return sys.Stat_t{Ino: g.inoOf["input/"+name], Mode: 0o444, Nlink: 1, Size: src.statSize(), Atim: now, Mtim: now, Ctim: now}, 0
	case kOutput:
		n, ok := g.outputs[name]
		if !ok {
			return sys.Stat_t{}, experimentalsys.ENOENT
		}
		return n.stat(), 0
	case kNotDir:
		return sys.Stat_t{}, experimentalsys.ENOTDIR
	}
	return sys.Stat_t{}, experimentalsys.ENOENT
}

// Stat implements experimentalsys.FS.
func (g *guestFS) Stat(p string) (sys.Stat_t, experimentalsys.Errno) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k, name := g.resolve(p)
	return g.statLocked(k, name)
}

// Lstat implements experimentalsys.FS; there are no symbolic links.
func (g *guestFS) Lstat(p string) (sys.Stat_t, experimentalsys.Errno) { return g.Stat(p) }

// Mkdir implements experimentalsys.FS: /output/ is flat, the rest read-only.
func (g *guestFS) Mkdir(p string, _ fs.FileMode) experimentalsys.Errno {
	g.mu.Lock()
	defer g.mu.Unlock()
	k, name := g.resolve(p)
	switch k {
	case kRoot, kInputDir, kOutputDir, kInputSubdir:
		return experimentalsys.EEXIST
	case kOutput:
		if _, ok := g.outputs[name]; ok {
			return experimentalsys.EEXIST
		}
		return experimentalsys.EPERM
	}
	return experimentalsys.EROFS
}

// Chmod implements experimentalsys.FS: modes are fixed.
func (g *guestFS) Chmod(p string, _ fs.FileMode) experimentalsys.Errno {
	g.mu.Lock()
	defer g.mu.Unlock()
	k, name := g.resolve(p)
	if _, errno := g.statLocked(k, name); errno != 0 {
		return errno
	}
	return experimentalsys.EPERM
}

// Rename implements experimentalsys.FS, within /output/ only.
func (g *guestFS) Rename(from, to string) experimentalsys.Errno {
	g.mu.Lock()
	defer g.mu.Unlock()
	kf, nf := g.resolve(from)
	kt, nt := g.resolve(to)
	if kf != kOutput || kt != kOutput {
		if _, errno := g.statLocked(kf, nf); errno != 0 {
			return errno
		}
		return experimentalsys.EROFS
	}
	n, ok := g.outputs[nf]
	if !ok {
		return experimentalsys.ENOENT
	}
	if nf == nt {
		return 0
	}
	if old, ok := g.outputs[nt]; ok {
		// Replaced: it keeps its bytes for as long as it is open.
		old.named = false
		g.releaseIfUnheld(old)
	}
	delete(g.outputs, nf)
	g.outputs[nt] = n
	return 0
}

// Rmdir implements experimentalsys.FS: the three directories stay.
func (g *guestFS) Rmdir(p string) experimentalsys.Errno {
	g.mu.Lock()
	defer g.mu.Unlock()
	k, name := g.resolve(p)
	switch k {
	case kRoot, kInputDir, kInputSubdir:
		return experimentalsys.EROFS
	case kOutputDir:
		return experimentalsys.EPERM
	case kInput, kOutput:
		if _, errno := g.statLocked(k, name); errno != 0 {
			return errno
		}
		return experimentalsys.ENOTDIR
	}
	return experimentalsys.ENOENT
}

// Unlink implements experimentalsys.FS: outputs may be removed, inputs not.
func (g *guestFS) Unlink(p string) experimentalsys.Errno {
	g.mu.Lock()
	defer g.mu.Unlock()
	k, name := g.resolve(p)
	switch k {
	case kOutput:
		n, ok := g.outputs[name]
		if !ok {
			return experimentalsys.ENOENT
		}
		// Unnamed: it keeps its bytes for as long as it is open.
		n.named = false
		delete(g.outputs, name)
		g.releaseIfUnheld(n)
		return 0
	case kInput:
		if _, ok := g.inputs[name]; !ok {
			return experimentalsys.ENOENT
		}
		return experimentalsys.EROFS
	case kRoot, kInputDir, kOutputDir, kInputSubdir:
		return experimentalsys.EISDIR
	}
	return experimentalsys.ENOENT
}

// Link implements experimentalsys.FS: no hard links.
func (g *guestFS) Link(_, _ string) experimentalsys.Errno { return experimentalsys.EPERM }

// Symlink implements experimentalsys.FS: no symbolic links.
func (g *guestFS) Symlink(_, _ string) experimentalsys.Errno { return experimentalsys.EPERM }

// Readlink implements experimentalsys.FS: nothing is a link.
func (g *guestFS) Readlink(p string) (string, experimentalsys.Errno) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k, name := g.resolve(p)
	if _, errno := g.statLocked(k, name); errno != 0 {
		return "", errno
	}
	return "", experimentalsys.EINVAL
}

// Utimens implements experimentalsys.FS: only outputs have settable times.
func (g *guestFS) Utimens(p string, _, mtim int64) experimentalsys.Errno {
	g.mu.Lock()
	defer g.mu.Unlock()
	k, name := g.resolve(p)
	if k == kOutput {
		n, ok := g.outputs[name]
		if !ok {
			return experimentalsys.ENOENT
		}
		if mtim >= 0 {
			n.mtime = mtim
		}
		return 0
	}
	if _, errno := g.statLocked(k, name); errno != 0 {
		return errno
	}
	return experimentalsys.EROFS
}

// refuse records that a limit refused an operation; g.mu is held.
func (g *guestFS) refuse(r refusal) experimentalsys.Errno {
	g.last = r
	switch r {
	case refusedFiles:
		g.filesHit = true
	case refusedBytes:
		g.bytesHit = true
	}
	return errOutputLimit
}

// takeRefusal returns and forgets the refusal recorded since the last call.
func (g *guestFS) takeRefusal() refusal {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.last
	g.last = refusedNone
	return r
}

// outputLayout says where one output's bytes lie in the output area.
type outputLayout struct {
	name   string
	size   int64
	blocks []uint32
}

// collect returns where the named outputs lie in the area, in name order,
// and the limits that refused something (Report.OutputLimitsHit).
func (g *guestFS) collect() ([]outputLayout, []string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.broken != nil {
		return nil, nil, fmt.Errorf("isolate: the output area failed: %w", g.broken)
	}
	outs := make([]outputLayout, 0, len(g.outputs))
	for _, name := range sortedKeys(g.outputs) {
		n := g.outputs[name]
		outs = append(outs, outputLayout{name: name, size: n.size, blocks: n.blocks})
	}
	var hit []string
	if g.bytesHit {
		hit = append(hit, LimitMaxOutput)
	}
	if g.filesHit {
		hit = append(hit, LimitMaxOutputFiles)
	}
	return outs, hit, nil
}

// dirFile is an open directory: "/", "/input", "/output" or a directory
// input "/input/name".
type dirFile struct {
	experimentalsys.UnimplementedFile
	experimentalsys.DirFile
	g      *guestFS
	k      kind
	name   string // of a directory input
	read   bool   // entries already returned (reset by Seek(0))
	closed bool
}

func (d *dirFile) Dev() (uint64, experimentalsys.Errno) { return 0, 0 }
func (d *dirFile) Ino() (sys.Inode, experimentalsys.Errno) {
	st, errno := d.Stat()
	return st.Ino, errno
}
func (d *dirFile) IsDir() (bool, experimentalsys.Errno) { return true, 0 }
func (d *dirFile) IsAppend() bool                       { return false }
func (d *dirFile) SetAppend(bool) experimentalsys.Errno { return experimentalsys.EISDIR }
func (d *dirFile) Read([]byte) (int, experimentalsys.Errno) {
	return 0, experimentalsys.EISDIR
}
func (d *dirFile) Pread([]byte, int64) (int, experimentalsys.Errno) {
	return 0, experimentalsys.EISDIR
}
func (d *dirFile) Write([]byte) (int, experimentalsys.Errno) {
	return 0, experimentalsys.EISDIR
}
func (d *dirFile) Pwrite([]byte, int64) (int, experimentalsys.Errno) {
	return 0, experimentalsys.EISDIR
}
func (d *dirFile) Truncate(int64) experimentalsys.Errno { return experimentalsys.EISDIR }
func (d *dirFile) Sync() experimentalsys.Errno          { return 0 }
func (d *dirFile) Datasync() experimentalsys.Errno      { return 0 }
func (d *dirFile) Utimens(int64, int64) experimentalsys.Errno {
	return experimentalsys.EROFS
}
func (d *dirFile) Close() experimentalsys.Errno {
	if !d.closed {
		d.closed = true
		d.g.closeHandle(nil)
	}
	return 0
}

func (d *dirFile) Stat() (sys.Stat_t, experimentalsys.Errno) {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	return d.g.statLocked(d.k, d.name)
}

func (d *dirFile) Seek(offset fileOffset, whence int) (fileOffset, experimentalsys.Errno) {
	if offset == 0 && whence == io.SeekStart {
		d.read = false
		return 0, 0
	}
	return 0, experimentalsys.EINVAL
}

// Readdir returns every entry on the first call (directories are small),
// then nothing until the directory is rewound.
func (d *dirFile) Readdir(n int) ([]experimentalsys.Dirent, experimentalsys.Errno) {
	if d.read {
		return nil, 0
	}
	d.read = true
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	switch d.k {
	case kRoot:
		return []experimentalsys.Dirent{
			{Ino: inoInput, Name: "input", Type: fs.ModeDir},
			{Ino: inoOutput, Name: "output", Type: fs.ModeDir},
		}, 0
	case kInputDir:
		var ds []experimentalsys.Dirent
		for _, name := range sortedKeys(d.g.inputs) {
			if !strings.Contains(name, "/") {
				ds = append(ds, experimentalsys.Dirent{Ino: d.g.inoOf["input/"+name], Name: name})
			}
		}
		for dir := range d.g.dirs {
			ds = append(ds, experimentalsys.Dirent{Ino: d.g.inoOf["input/"+dir], Name: dir, Type: fs.ModeDir})
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i].Name < ds[j].Name })
		return ds, 0
	case kInputSubdir:
		var ds []experimentalsys.Dirent
		for _, file := range d.g.dirs[d.name] {
			ds = append(ds, experimentalsys.Dirent{Ino: d.g.inoOf["input/"+d.name+"/"+file], Name: file})
		}
		return ds, 0
	case kOutputDir:
		var ds []experimentalsys.Dirent
		for _, name := range sortedKeys(d.g.outputs) {
			ds = append(ds, experimentalsys.Dirent{Ino: d.g.outputs[name].ino, Name: name})
		}
		return ds, 0
	}
	return nil, 0
}

func seek(cur, size, offset int64, whence int) (int64, experimentalsys.Errno) {
	var base int64
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		base = cur
	case io.SeekEnd:
		base = size
	default:
		return cur, experimentalsys.EINVAL
	}
	n := base + offset
	if n < 0 || (offset > 0 && n < base) {
		return cur, experimentalsys.EINVAL
	}
	return n, 0
}

// fileOffset is int64. The alias keeps go vet's stdmethods check from
// mistaking the Seek methods below (wazero's experimentalsys.File contract,
// which returns an Errno) for a broken io.Seeker.
type fileOffset = int64

// outFile is an open output. It stays on its file whatever happens to the
// file's name (rename, unlink): writes through it are the file's, and
// count against the budget while the handle keeps the file held.
type outFile struct {
	experimentalsys.UnimplementedFile
	g                   *guestFS
	n                   *outNode
	off                 int64
	read, write, append bool
	closed              bool
}

func (n *outNode) stat() sys.Stat_t {
	return sys.Stat_t{Ino: n.ino, Mode: 0o644, Nlink: nlink(n.named), Size: n.size, Atim: n.mtime, Mtim: n.mtime, Ctim: n.mtime}
}

func nlink(named bool) uint64 {
	if named {
		return 1
	}
	return 0
}

func (f *outFile) Dev() (uint64, experimentalsys.Errno)    { return 0, 0 }
func (f *outFile) Ino() (sys.Inode, experimentalsys.Errno) { return f.n.ino, 0 }
func (f *outFile) IsDir() (bool, experimentalsys.Errno)    { return false, 0 }
func (f *outFile) IsAppend() bool                          { return f.append }
func (f *outFile) SetAppend(enable bool) experimentalsys.Errno {
	f.append = enable
	return 0
}
func (f *outFile) Stat() (sys.Stat_t, experimentalsys.Errno) {
	f.g.mu.Lock()
	defer f.g.mu.Unlock()
	return f.n.stat(), 0
}
func (f *outFile) Read(buf []byte) (int, experimentalsys.Errno) {
	n, errno := f.Pread(buf, f.off)
	f.off += int64(n)
	return n, errno
}
func (f *outFile) Pread(buf []byte, off int64) (int, experimentalsys.Errno) {
	if !f.read {
		return 0, experimentalsys.EBADF
	}
	if off < 0 {
		return 0, experimentalsys.EINVAL
	}
	f.g.mu.Lock()
	defer f.g.mu.Unlock()
	if off >= f.n.size {
		return 0, 0
	}
	buf = buf[:min(int64(len(buf)), f.n.size-off)]
	if err := f.g.area.io(f.n.blocks, buf, off, false); err != nil {
		f.g.fail(err)
		return 0, experimentalsys.EIO
	}
	return len(buf), 0
}
func (f *outFile) Seek(offset fileOffset, whence int) (fileOffset, experimentalsys.Errno) {
	f.g.mu.Lock()
	size := f.n.size
	f.g.mu.Unlock()
	n, errno := seek(f.off, size, offset, whence)
	if errno == 0 {
		f.off = n
	}
	return n, errno
}
func (f *outFile) Readdir(int) ([]experimentalsys.Dirent, experimentalsys.Errno) {
	return nil, experimentalsys.ENOTDIR
}
func (f *outFile) Write(buf []byte) (int, experimentalsys.Errno) {
	if f.append {
		f.g.mu.Lock()
		f.off = f.n.size
		f.g.mu.Unlock()
	}
	n, errno := f.Pwrite(buf, f.off)
	f.off += int64(n)
	return n, errno
}

// Pwrite writes within the output budget: a write that would take the total
// past MaxOutput writes what fits and the next one fails.
func (f *outFile) Pwrite(buf []byte, off int64) (int, experimentalsys.Errno) {
	if !f.write {
		return 0, experimentalsys.EBADF
	}
	if off < 0 {
		return 0, experimentalsys.EINVAL
	}
	if len(buf) == 0 {
		return 0, 0
	}
	g := f.g
	g.mu.Lock()
	defer g.mu.Unlock()
	end := off + int64(len(buf))
	if end < off {
		return 0, experimentalsys.EINVAL
	}
	if end > f.n.size {
		room := g.maxBytes - g.used
		if room <= 0 || off >= f.n.size+room {
			return 0, g.refuse(refusedBytes)
		}
		if end-f.n.size > room {
			// Write what fits; the next write is refused. (Flag it
			// now: the guest may not try again.)
			buf = buf[:f.n.size+room-off]
			end = off + int64(len(buf))
			g.bytesHit = true
		}
		if errno := g.resize(f.n, end); errno != 0 {
			return 0, errno
		}
	}
	if g.broken != nil {
		return 0, experimentalsys.EIO
	}
	if err := g.area.io(f.n.blocks, buf, off, true); err != nil {
		g.fail(err)
		return 0, experimentalsys.EIO
	}
	f.n.mtime = g.now()
	return len(buf), 0
}

func (f *outFile) Truncate(size int64) experimentalsys.Errno {
	if !f.write {
		return experimentalsys.EBADF
	}
	if size < 0 {
		return experimentalsys.EINVAL
	}
	f.g.mu.Lock()
	defer f.g.mu.Unlock()
	if errno := f.g.resize(f.n, size); errno != 0 {
		return errno
	}
	f.n.mtime = f.g.now()
	return 0
}
func (f *outFile) Sync() experimentalsys.Errno     { return 0 }
func (f *outFile) Datasync() experimentalsys.Errno { return 0 }
func (f *outFile) Utimens(_, mtim int64) experimentalsys.Errno {
	f.g.mu.Lock()
	defer f.g.mu.Unlock()
	if mtim >= 0 {
		f.n.mtime = mtim
	}
	return 0
}
func (f *outFile) Close() experimentalsys.Errno {
	if !f.closed {
		f.closed = true
		f.g.closeHandle(f.n)
	}
	return 0
}
