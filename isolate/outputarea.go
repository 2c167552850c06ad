package isolate

import (
	"container/heap"
	"errors"
	"fmt"
	"math/bits"
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

// memoryStore is an area in anonymous memory, committed by the kernel
// only as it is written; zeroing whole pages gives them back.
type memoryStore struct {
	b    []byte
	free func()
}

func newMemoryStore(size int64) (*memoryStore, error) {
	b, free, err := mapMemory(uint64(size))
	if err != nil {
		return nil, fmt.Errorf("mapping an output area of %d bytes: %w", size, err)
	}
	return &memoryStore{b: b, free: free}, nil
}

func (m *memoryStore) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, fmt.Errorf("output area: read of %d bytes at %d beyond its %d bytes", len(p), off, len(m.b))
	}
	return copy(p, m.b[off:]), nil
}

func (m *memoryStore) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, fmt.Errorf("output area: write of %d bytes at %d beyond its %d bytes", len(p), off, len(m.b))
	}
	return copy(m.b[off:], p), nil
}

func (m *memoryStore) zero(off, n int64) error {
	if off < 0 || off+n > int64(len(m.b)) {
		return fmt.Errorf("output area: zeroing %d bytes at %d beyond its %d bytes", n, off, len(m.b))
	}
	return zeroMemory(m.b[off : off+n])
}

func (m *memoryStore) close() {
	if m.free != nil {
		m.free()
		m.free, m.b = nil, nil
	}
}
