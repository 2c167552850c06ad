//go:build !linux

package prealloc

import "os"

// DataSync is f.Sync where fdatasync is not used.
func DataSync(f *os.File) error { return f.Sync() }
