//go:build !wasip1

package ops

// acceptErrno is the probe's host call in the isolate; natively there is
// no WASI host, and the probe reports EBADF (8) for every descriptor.
func acceptErrno(int32) int32 { return 8 }
