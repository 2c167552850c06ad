//go:build wasip1

package ops

import "unsafe"

//go:wasmimport wasi_snapshot_preview1 sock_accept
//go:noescape
func sockAccept(fd int32, flags int32, newfd unsafe.Pointer) int32

// acceptErrno asks the host to accept a connection on fd: the one way
// WASI preview 1 gives a guest to the network (on a socket the host
// preopened). It returns the errno (0: a connection was accepted).
func acceptErrno(fd int32) int32 {
	var nfd int32
	return sockAccept(fd, 0, unsafe.Pointer(&nfd))
}
