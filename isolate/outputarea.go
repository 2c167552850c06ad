package isolate

import (
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The bytes of the files under /output/ live in an output area: a fixed
// number of fixed-size blocks in one store (areaStore), handed out to files
// as they grow and taken back as they shrink or disappear. The area is
// sized so that it can never run out while the budget holds:
//
//	blocks = ceil(MaxOutput / block) + MaxOutputFiles
//
// because every held file (named, or unlinked but still open) wastes less
// than one block at its tail, and at most MaxOutputFiles files are held.
// So the bytes the guest holds are bounded by MaxOutput (accounting, in
// guestFS), and the space the area uses by MaxOutput plus MaxOutputFiles
// blocks (its size) — also if the accounting were wrong.
//
// Invariants (checkInvariants, used by the property tests):
//   - every block is either free (on the heap or at or above next) or
//     belongs to exactly one held file;
//   - a free block reads as zeros, and so does every byte of a file's last
//     block beyond the file's size; so a file that grows, by a write past
//     its end or by truncate, reads zeros in the gap without anything being
//     written there.

// Block sizes: at least a page (zeroing whole pages releases them), at
// most 1 MiB, and large enough that an area has no more than
// maxAreaBlocks blocks for its bytes (a file's block list costs 4 bytes a
// block of the worker's memory).
const (
	minAreaBlock  = 4 << 10
	maxAreaBlock  = 1 << 20
	maxAreaBlocks = 1 << 20
)

// areaBlockSize is the block size for a MaxOutput of maxBytes.
func areaBlockSize(maxBytes int64) int64 {
	b := int64(minAreaBlock)
	if per := (maxBytes + maxAreaBlocks - 1) / maxAreaBlocks; per > b {
		b = int64(1) << bits.Len64(uint64(per-1))
	}
	return min(b, maxAreaBlock)
}

// areaLayout is the size of the output area for a job's limits.
func areaLayout(maxBytes int64, maxFiles int) (block int64, blocks uint32, err error) {
	block = areaBlockSize(maxBytes)
	n := (maxBytes+block-1)/block + int64(maxFiles)
	if n > 1<<31 {
		return 0, 0, fmt.Errorf("an output area of %d blocks of %d bytes is too large (max_output %d, max_output_files %d)", n, block, maxBytes, maxFiles)
	}
	return block, uint32(n), nil
}

// areaStore holds the area's bytes, addressed from 0 to its size.
type areaStore interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	// zero makes n bytes at off read as zeros (and releases the space
	// where the store can).
	zero(off, n int64) error
}

// outputArea hands out blocks of its store.
type outputArea struct {
	store  areaStore
	block  int64
	blocks uint32
	next   uint32    // blocks at or above next were never handed out
	free   blockHeap // returned blocks (zeroed), lowest first
	inUse  int64     // blocks handed out and not returned
}

func newOutputArea(store areaStore, block int64, blocks uint32) *outputArea {
	return &outputArea{store: store, block: block, blocks: blocks}
}

// errAreaFull means the area has no free block. With the accounting of
// guestFS this never happens; it is refused like a full budget.
var errAreaFull = errors.New("output area full")

// alloc hands out the lowest free block: a file written in one go then
// gets consecutive blocks, which one system call reads or writes.
func (a *outputArea) alloc() (uint32, error) {
	if len(a.free) > 0 {
		a.inUse++
		return heap.Pop(&a.free).(uint32), nil
	}
	if a.next >= a.blocks {
		return 0, errAreaFull
	}
	a.next++
	a.inUse++
	return a.next - 1, nil
}

// release zeroes blocks and returns them.
func (a *outputArea) release(blocks []uint32) error {
	var err error
	forRuns(blocks, func(first uint32, n int) {
		if e := a.store.zero(int64(first)*a.block, int64(n)*a.block); e != nil && err == nil {
			err = e
		}
	})
	for _, b := range blocks {
		heap.Push(&a.free, b)
	}
	a.inUse -= int64(len(blocks))
	return err
}

// forRuns calls f for each run of consecutive block numbers in blocks.
func forRuns(blocks []uint32, f func(first uint32, n int)) {
	for i := 0; i < len(blocks); {
		j := i + 1
		for j < len(blocks) && blocks[j] == blocks[j-1]+1 {
			j++
		}
		f(blocks[i], j-i)
		i = j
	}
}

// io reads or writes p at offset off of a file made of blocks, one store
// call per run of consecutive blocks. The caller keeps off+len(p) within
// the blocks.
func (a *outputArea) io(blocks []uint32, p []byte, off int64, write bool) error {
	for len(p) > 0 {
		i := off / a.block
		in := off % a.block
		// Extend over the following blocks while they are consecutive.
		span := a.block - in
		j := i + 1
		for span < int64(len(p)) && j < int64(len(blocks)) && blocks[j] == blocks[j-1]+1 {
			span += a.block
			j++
		}
		n := min(span, int64(len(p)))
		at := int64(blocks[i])*a.block + in
		var err error
		if write {
			_, err = a.store.WriteAt(p[:n], at)
		} else {
			_, err = a.store.ReadAt(p[:n], at)
		}
		if err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// blockHeap is a min-heap of block numbers.
type blockHeap []uint32

func (h blockHeap) Len() int           { return len(h) }
func (h blockHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h blockHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *blockHeap) Push(x any)        { *h = append(*h, x.(uint32)) }
func (h *blockHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// fileStore is an area in a file: on the node's disk (an unnamed file in
// its data directory) or in memory (a memfd) without one. The worker gets
// a descriptor of it and RLIMIT_FSIZE = its size, so even a worker that
// stopped following the accounting cannot make it larger.
type fileStore struct {
	f *os.File
}

// ReadAt reads as zeros what lies beyond the file's end: blocks never
// written (a file grown by truncate) are holes.
func (s fileStore) ReadAt(p []byte, off int64) (int, error) {
	n, err := s.f.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		clear(p[n:])
		return len(p), nil
	}
	return n, err
}

func (s fileStore) WriteAt(p []byte, off int64) (int, error) { return s.f.WriteAt(p, off) }

// zero punches a hole (the range reads as zeros and gives its space back),
// or, where the file system cannot, writes zeros.
func (s fileStore) zero(off, n int64) error {
	if n <= 0 {
		return nil
	}
	err := unix.Fallocate(int(s.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	zeros := make([]byte, min(n, 64<<10))
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := s.f.WriteAt(zeros[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// createAreaFile makes an empty output area file: unnamed, in dir if
// given (O_TMPFILE, or a temporary file removed at once where the file
// system has no O_TMPFILE), else in memory (memfd). It is gone when the
// last descriptor closes, crash or not.
func createAreaFile(dir string) (*os.File, error) {
	if dir == "" {
		fd, err := unix.MemfdCreate("cloister-output", unix.MFD_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("isolate: creating the output area (memfd): %w", err)
		}
		return os.NewFile(uintptr(fd), "cloister-output"), nil
	}
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), filepath.Join(dir, "(output area)")), nil
	}
	f, err := os.CreateTemp(dir, ".output-area-")
	if err != nil {
		return nil, fmt.Errorf("isolate: creating the output area in %s: %w", dir, err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("isolate: unlinking the output area: %w", err)
	}
	return f, nil
}

// encodeBlocks writes a block list as runs: uvarint first, uvarint count.
func encodeBlocks(blocks []uint32) []byte {
	var b []byte
	forRuns(blocks, func(first uint32, n int) {
		b = binary.AppendUvarint(b, uint64(first))
		b = binary.AppendUvarint(b, uint64(n))
	})
	return b
}

// decodeBlocks reads what encodeBlocks wrote, from a worker that may be
// compromised: every block must lie in the area (below blocks), there must
// be exactly want of them, and none may already be marked in used (one
// bit per block), which it marks.
func decodeBlocks(b []byte, blocks uint32, want int64, used []uint64) ([]uint32, error) {
	if want > int64(blocks) {
		return nil, fmt.Errorf("%d blocks in an area of %d", want, blocks)
	}
	out := make([]uint32, 0, want)
	for len(b) > 0 {
		first, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errors.New("bad block run")
		}
		b = b[n:]
		count, n := binary.Uvarint(b)
		if n <= 0 || count == 0 {
			return nil, errors.New("bad block run")
		}
		b = b[n:]
		if first >= uint64(blocks) || count > uint64(blocks)-first || int64(len(out))+int64(count) > want {
			return nil, fmt.Errorf("block run %d+%d outside an area of %d blocks or beyond the file's %d", first, count, blocks, want)
		}
		for k := first; k < first+count; k++ {
			if used[k/64]&(1<<(k%64)) != 0 {
				return nil, fmt.Errorf("block %d belongs to two files", k)
			}
			used[k/64] |= 1 << (k % 64)
			out = append(out, uint32(k))
		}
	}
	if int64(len(out)) != want {
		return nil, fmt.Errorf("%d blocks for a file that needs %d", len(out), want)
	}
	return out, nil
}

// areaReader reads one output's bytes from the area file.
type areaReader struct {
	area   *outputArea
	blocks []uint32
	size   int64
}

func (r *areaReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("isolate: negative offset")
	}
	if off >= r.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.size-off)
	if err := r.area.io(r.blocks, p[:n], off, false); err != nil {
		return 0, err
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}
