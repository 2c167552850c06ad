package isolate

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/sys"
)

type sysStat = sys.Stat_t

// The output budget as an invariant. A sequence of file operations — open
// with every combination of flags, write, pwrite, truncate, allocate,
// read, seek, rename, unlink, close, on any handle, in any order — is
// applied both to the guest file system and to a model that states the
// rules in the plainest way (a byte slice per file). After every step:
//
//   - each operation's result (bytes, errno) is the model's;
//   - bytes held (the sizes of every file that is named or still open)
//     never exceed MaxOutput and never go negative, files held never
//     exceed MaxOutputFiles, and the file system's counters equal the
//     model's;
//   - the output area is consistent: every block free or owned by exactly
//     one held file, each file owning exactly the blocks its size needs,
//     free blocks and the bytes past a file's end reading as zeros;
//   - every held file's bytes are the model's;
//   - a refusal is reported as the limit that refused (ENOSPC / EDQUOT),
//     and the report's flags match the model's.
//
// TestGuestFSBudgetProperty runs random sequences (bounded: a few seconds);
// FuzzGuestFSBudget interprets arbitrary bytes as a sequence.

// mFile is the model of one output file.
type mFile struct {
	data  []byte
	named bool
	open  int
}

// mHandle is the model of one open handle.
type mHandle struct {
	kind              kind // kOutput, kInput, kRoot (any directory)
	f                 *mFile
	in                []byte
	read, write, appd bool
	off               int64
	closed            bool
}

type fsModel struct {
	names              map[string]*mFile
	max                int64
	maxFiles           int
	used               int64
	held, handles      int
	bytesHit, filesHit bool
}

func (m *fsModel) release(f *mFile) {
	if !f.named && f.open == 0 {
		m.used -= int64(len(f.data))
		m.held--
		f.data = nil
	}
}

// result of one operation: bytes and errno, with refusals told apart.
type fsResult struct {
	n     int64
	errno experimentalsys.Errno
	ref   refusal
}

func (r fsResult) String() string {
	if r.ref != refusedNone {
		return fmt.Sprintf("n=%d refused(%d)", r.n, r.ref)
	}
	return fmt.Sprintf("n=%d errno=%v", r.n, r.errno)
}

func refused(r refusal) fsResult { return fsResult{errno: errOutputLimit, ref: r} }

// fsHarness runs the same operations on a guestFS and on the model.
type fsHarness struct {
	t       testing.TB
	g       *guestFS
	m       *fsModel
	gh      []experimentalsys.File // guest handles, index = model handle
	mh      []*mHandle
	nodeOf  map[*mFile]*outNode
	step    int
	history []string
}

var fsNames = []string{"a", "b", "c", "d"}

const fsInput = "in"

var fsInputData = []byte("the input's bytes, read-only")

func newFSHarness(t testing.TB, maxBytes int64, maxFiles int) *fsHarness {
	// The input also lies in a directory input, whose handles count too.
	g := newGuestFS(map[string]*inputSource{fsInput: bytesInput(fsInputData), "d/" + fsInput: bytesInput(fsInputData)}, newTestArea(t, maxBytes, maxFiles), maxBytes, maxFiles, func() int64 { return 7 })
	return &fsHarness{t: t, g: g,
		m:      &fsModel{names: map[string]*mFile{}, max: maxBytes, maxFiles: maxFiles},
		nodeOf: map[*mFile]*outNode{}}
}

// guestResult turns a guest call's outcome into an fsResult.
func (h *fsHarness) guestResult(n int64, errno experimentalsys.Errno) fsResult {
	r := fsResult{n: n, errno: errno}
	if errno == errOutputLimit {
		r.ref = h.g.takeRefusal()
	} else {
		h.g.takeRefusal()
	}
	return r
}

func (h *fsHarness) fail(format string, args ...any) {
	h.t.Helper()
	tail := h.history
	if len(tail) > 30 {
		tail = tail[len(tail)-30:]
	}
	h.t.Fatalf("step %d: %s\nlast operations:\n  %s", h.step, fmt.Sprintf(format, args...), joinLines(tail))
}

func joinLines(ss []string) string {
	var b bytes.Buffer
	for i, s := range ss {
		if i > 0 {
			b.WriteString("\n  ")
		}
		b.WriteString(s)
	}
	return b.String()
}

// pattern is the data a write of step s writes: distinct per step.
func pattern(s, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(s*31 + i%251 + 1)
	}
	return b
}

// opReader decodes operations from bytes; when they run out it yields
// zeros, which decode to harmless operations.
type opReader struct{ b []byte }

func (r *opReader) u8() byte {
	if len(r.b) == 0 {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *opReader) u16() int64 {
	return int64(r.u8())<<8 | int64(r.u8())
}

// size decodes a length or offset up to 1.5 × the budget (so that both
// sides of every limit are reached), sometimes a huge or negative one.
func (r *opReader) size(max int64) int64 {
	switch v := r.u8(); {
	case v < 4:
		return []int64{-1, 1 << 62, 0, max}[v]
	default:
		return r.u16() * (max*3/2 + 2) / 65536
	}
}

// length decodes a buffer length, as size but never negative or huge.
func (r *opReader) length(max int64) int64 {
	n := r.size(max)
	if n < 0 || n > 1<<24 {
		return 1
	}
	return n
}

// apply decodes one operation from r and applies it to both sides.
func (h *fsHarness) apply(r *opReader) {
	h.step++
	op := r.u8() % 13
	m, g := h.m, h.g
	var desc string
	var want, got fsResult
	handle := func() (int, bool) {
		if len(h.mh) == 0 {
			return 0, false
		}
		return int(r.u8()) % len(h.mh), true
	}
	switch op {
	case 0, 1: // open an output with any flags
		name := fsNames[int(r.u8())%len(fsNames)]
		fl := r.u8()
		var flag experimentalsys.Oflag
		switch fl % 3 {
		case 0:
			flag = experimentalsys.O_RDONLY
		case 1:
			flag = experimentalsys.O_WRONLY
		case 2:
			flag = experimentalsys.O_RDWR
		}
		for bit, f := range []experimentalsys.Oflag{experimentalsys.O_CREAT, experimentalsys.O_EXCL, experimentalsys.O_TRUNC, experimentalsys.O_APPEND} {
			if fl&(4<<bit) != 0 {
				flag |= f
			}
		}
		if fl&64 != 0 && fl&128 != 0 {
			flag |= experimentalsys.O_DIRECTORY
		}
		desc = fmt.Sprintf("open(output/%s, %v)", name, flag)
		want = h.modelOpen(name, flag)
		f, errno := g.OpenFile("output/"+name, flag, 0o644)
		got = h.guestResult(0, errno)
		if errno == 0 && want.errno == 0 {
			h.gh = append(h.gh, f)
			mf := h.mh[len(h.mh)-1].f
			if n, ok := h.nodeOf[mf]; ok && n != f.(*outFile).n {
				h.fail("%s: the guest opened another file than the model", desc)
			}
			h.nodeOf[mf] = f.(*outFile).n
		} else if errno == 0 {
			f.Close()
		}
	case 2: // open the input or a directory
		var p string
		if r.u8()%2 == 0 {
			p = []string{"input/" + fsInput, "input/d/" + fsInput}[int(r.u8())%2]
		} else {
			p = []string{"/", "input", "output", "input/d"}[int(r.u8())%4]
		}
		desc = fmt.Sprintf("open(%s)", p)
		f, errno := g.OpenFile(p, experimentalsys.O_RDONLY, 0)
		got = h.guestResult(0, errno)
		want = fsResult{}
		if errno == 0 {
			k := kRoot
			if p == "input/"+fsInput || p == "input/d/"+fsInput {
				k = kInput
			}
			h.gh = append(h.gh, f)
			h.mh = append(h.mh, &mHandle{kind: k, in: fsInputData, read: true})
			m.handles++
		}
	case 3, 4: // write (fd_write), or pwrite (fd_pwrite)
		i, ok := handle()
		if !ok {
			return
		}
		n := r.length(m.max)
		data := pattern(h.step, int(n))
		if op == 3 {
			desc = fmt.Sprintf("write(h%d, %d bytes)", i, n)
			want = h.modelWrite(h.mh[i], data, 0, true)
			k, errno := h.gh[i].Write(data)
			got = h.guestResult(int64(k), errno)
		} else {
			off := r.size(m.max)
			desc = fmt.Sprintf("pwrite(h%d, %d bytes at %d)", i, n, off)
			want = h.modelWrite(h.mh[i], data, off, false)
			k, errno := h.gh[i].Pwrite(data, off)
			got = h.guestResult(int64(k), errno)
		}
	case 5, 6: // truncate (fd_filestat_set_size), or allocate (fd_allocate: grow only)
		i, ok := handle()
		if !ok {
			return
		}
		size := r.size(m.max)
		if op == 5 {
			desc = fmt.Sprintf("truncate(h%d, %d)", i, size)
			want = h.modelTruncate(h.mh[i], size)
			got = h.guestResult(0, h.gh[i].Truncate(size))
		} else {
			// What wazero's fd_allocate does: stat, then grow.
			desc = fmt.Sprintf("allocate(h%d, %d)", i, size)
			mh := h.mh[i]
			cur := int64(4096) // a directory's size
			switch mh.kind {
			case kOutput:
				cur = int64(len(mh.f.data))
			case kInput:
				cur = int64(len(mh.in))
			}
			switch {
			case size < 0:
				want = fsResult{errno: experimentalsys.EINVAL}
			case cur >= size:
				want = fsResult{}
			default:
				want = h.modelTruncate(mh, size)
			}
			errno := experimentalsys.EINVAL
			if size >= 0 {
				var st sysStat
				st, errno = h.gh[i].Stat()
				if errno == 0 && size > st.Size {
					errno = h.gh[i].Truncate(size)
				}
			}
			got = h.guestResult(0, errno)
		}
	case 7: // read or pread, checking the bytes
		i, ok := handle()
		if !ok {
			return
		}
		n := r.length(m.max)
		buf := make([]byte, n)
		var off int64
		pos := r.u8()%2 == 1
		if !pos {
			off = r.size(m.max)
			desc = fmt.Sprintf("pread(h%d, %d at %d)", i, n, off)
		} else {
			desc = fmt.Sprintf("read(h%d, %d)", i, n)
		}
		wantData, res := h.modelRead(h.mh[i], int(n), off, pos)
		want = res
		var k int
		var errno experimentalsys.Errno
		if pos {
			k, errno = h.gh[i].Read(buf)
		} else {
			k, errno = h.gh[i].Pread(buf, off)
		}
		got = h.guestResult(int64(k), errno)
		if errno == 0 && !bytes.Equal(buf[:k], wantData) {
			h.fail("%s: read %d bytes %x…, the model has %d bytes %x…", desc, k, head(buf[:k]), len(wantData), head(wantData))
		}
	case 8: // seek
		i, ok := handle()
		if !ok {
			return
		}
		off := r.size(m.max)
		whence := int(r.u8()) % 3
		desc = fmt.Sprintf("seek(h%d, %d, %d)", i, off, whence)
		mh := h.mh[i]
		if mh.kind == kRoot {
			return // directories only rewind; not part of the budget
		}
		size := int64(len(mh.in))
		if mh.kind == kOutput {
			size = int64(len(mh.f.data))
		}
		np, merr := seek(mh.off, size, off, whence)
		want = fsResult{n: np, errno: merr}
		if merr == 0 {
			mh.off = np
		}
		gp, errno := h.gh[i].Seek(off, whence)
		got = h.guestResult(gp, errno)
		if errno != 0 {
			got.n = np // the position is not returned on error
			want.n = np
		}
	case 9: // rename
		from, to := fsNames[int(r.u8())%len(fsNames)], fsNames[int(r.u8())%len(fsNames)]
		desc = fmt.Sprintf("rename(%s, %s)", from, to)
		want = h.modelRename(from, to)
		got = h.guestResult(0, g.Rename("output/"+from, "output/"+to))
	case 10: // unlink
		name := fsNames[int(r.u8())%len(fsNames)]
		desc = fmt.Sprintf("unlink(%s)", name)
		want = fsResult{errno: experimentalsys.ENOENT}
		if f, ok := m.names[name]; ok {
			f.named = false
			delete(m.names, name)
			m.release(f)
			want = fsResult{}
		}
		got = h.guestResult(0, g.Unlink("output/"+name))
	case 11, 12: // close
		i, ok := handle()
		if !ok {
			return
		}
		desc = fmt.Sprintf("close(h%d)", i)
		mh := h.mh[i]
		m.handles--
		if mh.kind == kOutput {
			mh.f.open--
			m.release(mh.f)
		}
		got = h.guestResult(0, h.gh[i].Close())
		want = fsResult{}
		h.mh = slices.Delete(h.mh, i, i+1)
		h.gh = slices.Delete(h.gh, i, i+1)
	}
	h.history = append(h.history, fmt.Sprintf("%d: %s → %v", h.step, desc, got))
	if got != want {
		h.fail("%s: got %v, the model says %v", desc, got, want)
	}
	h.check()
}

func head(b []byte) []byte { return b[:min(len(b), 8)] }

func (h *fsHarness) modelOpen(name string, flag experimentalsys.Oflag) fsResult {
	m := h.m
	f, ok := m.names[name]
	if !ok {
		switch {
		case flag&experimentalsys.O_CREAT == 0:
			return fsResult{errno: experimentalsys.ENOENT}
		case flag&experimentalsys.O_DIRECTORY != 0:
			return fsResult{errno: experimentalsys.ENOTDIR}
		case m.held >= m.maxFiles:
			m.filesHit = true
			return refused(refusedFiles)
		}
		f = &mFile{named: true}
		m.names[name] = f
		m.held++
	} else if flag&experimentalsys.O_CREAT != 0 && flag&experimentalsys.O_EXCL != 0 {
		return fsResult{errno: experimentalsys.EEXIST}
	}
	if flag&experimentalsys.O_DIRECTORY != 0 {
		return fsResult{errno: experimentalsys.ENOTDIR}
	}
	mh := &mHandle{kind: kOutput, f: f,
		read:  flag&experimentalsys.O_WRONLY == 0,
		write: flag&(experimentalsys.O_WRONLY|experimentalsys.O_RDWR) != 0,
		appd:  flag&experimentalsys.O_APPEND != 0}
	if flag&experimentalsys.O_TRUNC != 0 && mh.write {
		m.used -= int64(len(f.data))
		f.data = nil
	}
	f.open++
	m.handles++
	h.mh = append(h.mh, mh)
	return fsResult{}
}

// modelWrite is fd_write (pos: at the handle's position, or the end in
// append mode) or fd_pwrite (at off).
func (h *fsHarness) modelWrite(mh *mHandle, data []byte, off int64, pos bool) fsResult {
	m := h.m
	switch mh.kind {
	case kRoot:
		return fsResult{errno: experimentalsys.EISDIR}
	case kInput:
		return fsResult{errno: experimentalsys.EBADF}
	}
	if pos {
		off = mh.off
		if mh.appd {
			off = int64(len(mh.f.data))
			mh.off = off
		}
	}
	if !mh.write {
		return fsResult{errno: experimentalsys.EBADF}
	}
	if off < 0 {
		return fsResult{errno: experimentalsys.EINVAL}
	}
	if len(data) == 0 {
		return fsResult{}
	}
	f := mh.f
	size := int64(len(f.data))
	end := off + int64(len(data))
	if end < off {
		return fsResult{errno: experimentalsys.EINVAL}
	}
	if end > size {
		room := m.max - m.used
		if room <= 0 || off >= size+room {
			m.bytesHit = true
			return refused(refusedBytes)
		}
		if end-size > room {
			data = data[:size+room-off]
			end = off + int64(len(data))
			m.bytesHit = true
		}
		f.data = append(f.data, make([]byte, end-size)...)
		m.used += end - size
	}
	copy(f.data[off:], data)
	if pos {
		mh.off += int64(len(data))
	}
	return fsResult{n: int64(len(data))}
}

func (h *fsHarness) modelTruncate(mh *mHandle, size int64) fsResult {
	m := h.m
	switch {
	case mh.kind == kRoot:
		return fsResult{errno: experimentalsys.EISDIR}
	case mh.kind == kInput || !mh.write:
		return fsResult{errno: experimentalsys.EBADF}
	case size < 0:
		return fsResult{errno: experimentalsys.EINVAL}
	}
	f := mh.f
	cur := int64(len(f.data))
	if size > cur {
		if size-cur > m.max-m.used {
			m.bytesHit = true
			return refused(refusedBytes)
		}
		f.data = append(f.data, make([]byte, size-cur)...)
	} else {
		f.data = f.data[:size]
	}
	m.used += size - cur
	return fsResult{}
}

func (h *fsHarness) modelRead(mh *mHandle, n int, off int64, pos bool) ([]byte, fsResult) {
	if mh.kind == kRoot {
		return nil, fsResult{errno: experimentalsys.EISDIR}
	}
	data := mh.in
	if mh.kind == kOutput {
		if !mh.read {
			return nil, fsResult{errno: experimentalsys.EBADF}
		}
		data = mh.f.data
	}
	if pos {
		off = mh.off
	} else if off < 0 {
		return nil, fsResult{errno: experimentalsys.EINVAL}
	}
	var out []byte
	if off < int64(len(data)) {
		out = data[off:min(int64(len(data)), off+int64(n))]
	}
	if pos {
		mh.off += int64(len(out))
	}
	return out, fsResult{n: int64(len(out))}
}

func (h *fsHarness) modelRename(from, to string) fsResult {
	m := h.m
	f, ok := m.names[from]
	if !ok {
		return fsResult{errno: experimentalsys.ENOENT}
	}
	if from == to {
		return fsResult{}
	}
	if old, ok := m.names[to]; ok {
		old.named = false
		m.release(old)
	}
	delete(m.names, from)
	m.names[to] = f
	return fsResult{}
}

// check compares the counters with the model and checks the invariants of
// the budget and of the output area.
func (h *fsHarness) check() {
	g, m := h.g, h.m
	if g.used != m.used || g.held != m.held || g.handles != m.handles {
		h.fail("used/held/handles %d/%d/%d, the model has %d/%d/%d", g.used, g.held, g.handles, m.used, m.held, m.handles)
	}
	if g.used < 0 || g.used > g.maxBytes {
		h.fail("bytes held %d outside [0, %d]", g.used, g.maxBytes)
	}
	if g.held < 0 || g.held > g.maxFiles {
		h.fail("files held %d outside [0, %d]", g.held, g.maxFiles)
	}
	if g.bytesHit != m.bytesHit || g.filesHit != m.filesHit {
		h.fail("limit flags bytes %v files %v, the model has %v %v", g.bytesHit, g.filesHit, m.bytesHit, m.filesHit)
	}
	// Every held file: the named ones and those open through a handle.
	held := map[*outNode]*mFile{}
	for name, mf := range m.names {
		n, ok := g.outputs[name]
		if !ok {
			h.fail("output %q is in the model, not in the file system", name)
		}
		held[n] = mf
	}
	if len(g.outputs) != len(m.names) {
		h.fail("%d named outputs, the model has %d", len(g.outputs), len(m.names))
	}
	for i, mh := range h.mh {
		if mh.kind == kOutput {
			held[h.gh[i].(*outFile).n] = mh.f
		}
	}
	if len(held) != g.held {
		h.fail("%d files reachable, %d counted as held", len(held), g.held)
	}
	a := g.area
	owner := make(map[uint32]*outNode)
	var sum int64
	for n, mf := range held {
		sum += n.size
		if n.size != int64(len(mf.data)) {
			h.fail("a file has %d bytes, the model %d", n.size, len(mf.data))
		}
		if want := (n.size + a.block - 1) / a.block; int64(len(n.blocks)) != want {
			h.fail("a file of %d bytes owns %d blocks, want %d", n.size, len(n.blocks), want)
		}
		for _, b := range n.blocks {
			if b >= a.next {
				h.fail("block %d owned but never handed out (next %d)", b, a.next)
			}
			if owner[b] != nil {
				h.fail("block %d owned by two files", b)
			}
			owner[b] = n
		}
		got := make([]byte, int64(len(n.blocks))*a.block)
		if err := a.io(n.blocks, got, 0, false); err != nil {
			h.fail("reading a file's blocks: %v", err)
		}
		if !bytes.Equal(got[:n.size], mf.data) {
			h.fail("a file's bytes differ from the model's")
		}
		if !allZero(got[n.size:]) {
			h.fail("bytes past a file's end (%d) in its last block are not zero", n.size)
		}
	}
	if sum != g.used {
		h.fail("held files hold %d bytes, %d counted", sum, g.used)
	}
	if int64(len(owner))+int64(len(a.free)) != int64(a.next) || int64(len(owner)) != a.inUse {
		h.fail("%d blocks owned + %d free != %d handed out (in use %d)", len(owner), len(a.free), a.next, a.inUse)
	}
	for _, b := range a.free {
		if owner[b] != nil {
			h.fail("block %d is free and owned", b)
		}
		if !allZero(h.areaBytes(int64(b)*a.block, a.block)) {
			h.fail("free block %d is not zero", b)
		}
	}
	if !allZero(h.areaBytes(int64(a.next)*a.block, int64(a.blocks-a.next)*a.block)) {
		h.fail("blocks never handed out are not zero")
	}
}

// areaBytes reads n bytes of the area at off (a file that was never
// written that far reads as zeros).
func (h *fsHarness) areaBytes(off, n int64) []byte {
	b := make([]byte, n)
	if _, err := h.g.area.store.ReadAt(b, off); err != nil {
		h.fail("reading the area: %v", err)
	}
	return b
}

var zeros = make([]byte, 1<<20)

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// runFSOps applies the operations encoded in ops under the limits it
// starts with.
func runFSOps(t testing.TB, ops []byte) {
	r := &opReader{b: ops}
	maxBytes := []int64{1, 100, 5000, 9000, 70000}[r.u8()%5]
	maxFiles := 1 + int(r.u8()%4)
	h := newFSHarness(t, maxBytes, maxFiles)
	for len(r.b) > 0 {
		h.apply(r)
	}
	// Closing every handle leaves exactly the named files held.
	for len(h.mh) > 0 {
		h.apply(&opReader{b: []byte{11, 0}})
	}
	if h.g.held != len(h.g.outputs) {
		h.t.Fatalf("after closing every handle %d files held, %d named", h.g.held, len(h.g.outputs))
	}
}

func TestGuestFSBudgetProperty(t *testing.T) {
	sequences, length := 300, 300
	if testing.Short() || raceEnabled {
		sequences = 60 // the race detector makes every step ~10× slower
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range sequences {
		ops := make([]byte, length*6)
		for j := range ops {
			ops[j] = byte(rng.Uint32())
		}
		t.Run(fmt.Sprint(i), func(t *testing.T) { runFSOps(t, ops) })
		if t.Failed() {
			return
		}
	}
}

// cheatSequences are the ways a guest held more than the budget before
// the accounting followed files rather than names: write through a
// handle to a file unlinked or renamed over, and shrink such a file.
func cheatSequences() [][]byte {
	enc := func(ops ...[]byte) []byte {
		b := []byte{2, 1} // 5000 bytes, 2 files
		for _, o := range ops {
			b = append(b, o...)
		}
		return b
	}
	openW := func(name byte) []byte { return []byte{0, name, 1 | 4} } // O_WRONLY|O_CREAT
	full := []byte{3, 0, 3}                                           // write(h0, max)
	sz := func(v uint16) []byte { return []byte{4, byte(v >> 8), byte(v)} }
	return [][]byte{
		// create, fill, unlink, keep open, again
		enc(openW(0), full, []byte{10, 0}, openW(0), []byte{3, 1, 3}, []byte{3, 1, 3}),
		// fill, open a second handle, unlink, shrink through it, fill again
		enc(openW(0), full, openW(0), []byte{10, 0}, []byte{5, 1}, sz(0), openW(1), []byte{3, 2, 3}),
		// fill, rename another over it, shrink it through its handle
		enc(openW(0), full, openW(1), []byte{9, 1, 0}, []byte{5, 0}, sz(0), openW(1), []byte{3, 2, 3}),
	}
}

func TestGuestFSBudgetCheats(t *testing.T) {
	for i, ops := range cheatSequences() {
		t.Run(fmt.Sprint(i), func(t *testing.T) { runFSOps(t, ops) })
	}
}

func FuzzGuestFSBudget(f *testing.F) {
	for _, ops := range cheatSequences() {
		f.Add(ops)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 8 {
		ops := make([]byte, 256)
		for j := range ops {
			ops[j] = byte(rng.Uint32())
		}
		f.Add(ops)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 4096 {
			ops = ops[:4096]
		}
		runFSOps(t, ops)
	})
}
