package isolate

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
)

const wasmPage = 65536

// ceilingAllocator backs guest linear memory and enforces the memory ceiling
// itself rather than through wazero's WithMemoryLimitPages: a growth that
// wazero refuses against its own limit never reaches an allocator, so it
// could not be told apart from the guest exiting for reasons of its own. Here
// the refusal is recorded, and a guest that dies afterwards is reported as
// OutcomeMemory.
//
// The backing store is one anonymous mapping of the ceiling's size, reserved
// once and committed lazily by the kernel as pages are touched, so growth
// never copies and the process's address-space use is bounded by the ceiling.
type ceilingAllocator struct {
	ceiling uint64
	refused atomic.Bool
	peak    atomic.Uint64
}

// Allocate implements experimental.MemoryAllocator.
func (a *ceilingAllocator) Allocate(_, max uint64) experimental.LinearMemory {
	limit := min(max, a.ceiling)
	return &ceilingMemory{a: a, limit: limit}
}

type ceilingMemory struct {
	a     *ceilingAllocator
	limit uint64
	buf   []byte // len = current size, backing mapping of cap = limit
	free  func()
}

// Reallocate implements experimental.LinearMemory. Returning nil makes
// memory.grow return -1 to the guest.
func (m *ceilingMemory) Reallocate(size uint64) []byte {
	if size > m.limit {
		m.a.refused.Store(true)
		return nil
	}
	if m.buf == nil {
		b, free, err := mapMemory(m.limit)
		if err != nil {
			m.a.refused.Store(true)
			return nil
		}
		m.buf, m.free = b[:0], free
	}
	m.buf = m.buf[:size]
	if size > m.a.peak.Load() {
		m.a.peak.Store(size)
	}
	return m.buf
}

// Free implements experimental.LinearMemory.
func (m *ceilingMemory) Free() {
	if m.free != nil {
		m.free()
		m.free, m.buf = nil, nil
	}
}

// errMemoryMin is returned when a module's initial memory already exceeds the
// ceiling: nothing can run.
var errMemoryMin = errors.New("initial memory exceeds the memory ceiling")

// moduleMinMemory returns the largest initial page count among the memories a
// module defines or imports, reading only the import and memory sections.
// Malformed input is left to wazero's decoder to report; this returns 0 then.
func moduleMinMemory(b []byte) uint64 {
	if len(b) < 8 || string(b[:4]) != "\x00asm" {
		return 0
	}
	r := &wasmReader{b: b[8:]}
	var most uint64
	for len(r.b) > 0 {
		id, ok := r.byte()
		if !ok {
			return most
		}
		size, ok := r.u32()
		if !ok || uint64(size) > uint64(len(r.b)) {
			return most
		}
		sec := &wasmReader{b: r.b[:size]}
		r.b = r.b[size:]
		switch id {
		case 2: // imports
			n, ok := sec.u32()
			for i := uint32(0); ok && i < n; i++ {
				if !sec.name() || !sec.name() {
					return most
				}
				kind, ok2 := sec.byte()
				if !ok2 {
					return most
				}
				switch kind {
				case 0: // func: type index
					_, ok = sec.u32()
				case 1: // table: reftype + limits
					if _, ok = sec.byte(); ok {
						_, ok = sec.limits()
					}
				case 2: // memory
					var mn uint64
					mn, ok = sec.limits()
					most = max(most, mn)
				case 3: // global: valtype + mut
					_, ok = sec.byte()
					if ok {
						_, ok = sec.byte()
					}
				default:
					return most
				}
			}
		case 5: // memories
			n, ok := sec.u32()
			for i := uint32(0); ok && i < n; i++ {
				var mn uint64
				mn, ok = sec.limits()
				most = max(most, mn)
			}
		}
	}
	return most
}

type wasmReader struct{ b []byte }

func (r *wasmReader) byte() (byte, bool) {
	if len(r.b) == 0 {
		return 0, false
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c, true
}

func (r *wasmReader) u64() (uint64, bool) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		c, ok := r.byte()
		if !ok {
			return 0, false
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			return v, true
		}
	}
	return 0, false
}

func (r *wasmReader) u32() (uint32, bool) {
	v, ok := r.u64()
	if !ok || v > 0xffffffff {
		return 0, false
	}
	return uint32(v), true
}

func (r *wasmReader) name() bool {
	n, ok := r.u32()
	if !ok || uint64(n) > uint64(len(r.b)) {
		return false
	}
	r.b = r.b[n:]
	return true
}

// limits reads a limits entry and returns its minimum.
func (r *wasmReader) limits() (uint64, bool) {
	flags, ok := r.byte()
	if !ok {
		return 0, false
	}
	mn, ok := r.u64()
	if !ok {
		return 0, false
	}
	if flags&1 != 0 {
		if _, ok = r.u64(); !ok {
			return 0, false
		}
	}
	return mn, true
}

func checkMinMemory(module []byte, ceiling uint64) error {
	if pages := moduleMinMemory(module); pages*wasmPage > ceiling {
		return fmt.Errorf("%w: the module asks for %d pages (%d bytes) at start, the ceiling is %d bytes", errMemoryMin, pages, pages*wasmPage, ceiling)
	}
	return nil
}
