package isolate

import "golang.org/x/sys/unix"

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
