package isolate

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapMemory reserves size bytes of zeroed, private, anonymous memory. The
// kernel commits pages only when the guest touches them (MAP_NORESERVE).
func mapMemory(size uint64) ([]byte, func(), error) {
	if size == 0 {
		return []byte{}, func() {}, nil
	}
	b, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, nil, err
	}
	return b, func() { _ = unix.Munmap(b) }, nil
}

// zeroMemory zeroes b, a part of a mapping made by mapMemory: the whole
// pages in it are given back to the kernel (MADV_DONTNEED: they read as
// zeros again and hold no memory), the edges are cleared.
func zeroMemory(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	page := uintptr(unix.Getpagesize())
	start := uintptr(unsafe.Pointer(&b[0]))
	end := start + uintptr(len(b))
	lo := (start + page - 1) &^ (page - 1)
	hi := end &^ (page - 1)
	if lo >= hi {
		clear(b)
		return nil
	}
	clear(b[:lo-start])
	clear(b[hi-start:])
	if err := unix.Madvise(b[lo-start:hi-start], unix.MADV_DONTNEED); err != nil {
		clear(b[lo-start : hi-start])
	}
	return nil
}
