//go:build !linux

package node

import "os"

// datasync is f.Sync where fdatasync is not used.
func datasync(f *os.File) error { return f.Sync() }
