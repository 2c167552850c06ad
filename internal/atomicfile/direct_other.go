//go:build !linux

package atomicfile

import (
	"errors"
	"io"
	"os"
)

var errInvalid = errors.New("invalid argument")

// setDirect: O_DIRECT is used on Linux only; elsewhere a Direct file is
// written as any other.
func setDirect(*os.File, bool) error { return errors.ErrUnsupported }

func newDirectReader(name string, size int64) (io.ReadCloser, error) {
	return plainReader(name, size)
}
