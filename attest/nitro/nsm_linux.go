//go:build linux

package nitro

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultNSMPath is the Nitro Secure Module device inside an enclave.
const DefaultNSMPath = "/dev/nsm"

// nsmResponseMax is the NSM driver's maximum response size.
const nsmResponseMax = 0x3000

// nsmIoctlRequest is _IOWR(0x0A, 0, struct nsm_message), where
// nsm_message is two struct iovec (request, response): 32 bytes.
const nsmIoctlRequest = 0xC0200A00

type iovec struct {
	base unsafe.Pointer
	len  uint64
}

type nsmMessage struct {
	request  iovec
	response iovec
}

type nsmDevice struct{ f *os.File }

// OpenNSM opens the Nitro Secure Module device (DefaultNSMPath in an
// enclave). Outside a Nitro enclave it fails: the device does not exist.
func OpenNSM(path string) (Device, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("nitro: opening the NSM (only present inside a Nitro enclave): %w", err)
	}
	return &nsmDevice{f: f}, nil
}

func (d *nsmDevice) Send(request []byte) ([]byte, error) {
	if len(request) == 0 {
		return nil, fmt.Errorf("nitro: empty NSM request")
	}
	resp := make([]byte, nsmResponseMax)
	msg := nsmMessage{
		request:  iovec{base: unsafe.Pointer(&request[0]), len: uint64(len(request))},
		response: iovec{base: unsafe.Pointer(&resp[0]), len: uint64(len(resp))},
	}
	conn, err := d.f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var errno unix.Errno
	if err := conn.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, nsmIoctlRequest, uintptr(unsafe.Pointer(&msg)))
	}); err != nil {
		return nil, err
	}
	runtime.KeepAlive(request)
	runtime.KeepAlive(resp)
	if errno != 0 {
		return nil, fmt.Errorf("nitro: NSM ioctl: %w", errno)
	}
	if msg.response.len > uint64(len(resp)) {
		return nil, fmt.Errorf("nitro: NSM response length %d exceeds the buffer", msg.response.len)
	}
	return resp[:msg.response.len], nil
}

func (d *nsmDevice) Close() error { return d.f.Close() }
