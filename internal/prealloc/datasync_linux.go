package prealloc

import (
	"os"
	"syscall"
)

// DataSync makes f's data durable without its timestamps: on a file
// whose blocks and size are already durable, no journal commit.
func DataSync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
