package node

import (
	"os"
	"syscall"
)

// datasync makes f's data durable without its timestamps: on a file
// whose blocks and size are already durable, no journal commit.
func datasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
