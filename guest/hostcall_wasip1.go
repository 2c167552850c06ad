//go:build wasip1

package guest

import (
	"sync"
	"unsafe"
)

//go:wasmimport cloister_host_v1 call
//go:noescape
func hostCall(name unsafe.Pointer, nameLen uint32, req unsafe.Pointer, reqLen uint32, resp unsafe.Pointer, respCap uint32, respLen unsafe.Pointer) uint32

//go:wasmimport cloister_host_v1 response
//go:noescape
func hostResponse(resp unsafe.Pointer, respCap uint32, respLen unsafe.Pointer) uint32

// callBuf receives responses up to its size (64 KiB, made at the first
// call) without an allocation; callMu keeps a call and the fetch of its
// long response together.
var (
	callMu  sync.Mutex
	callBuf []byte
)

// HostCall asks the host to answer the call name with req, and returns the
// response (a new slice). It blocks until the host answers; the program's
// deadline still runs.
func HostCall(name string, req []byte) ([]byte, error) {
	callMu.Lock()
	defer callMu.Unlock()
	if callBuf == nil {
		callBuf = make([]byte, 64<<10)
	}
	var n uint32
	status := hostCall(unsafe.Pointer(unsafe.StringData(name)), uint32(len(name)),
		unsafe.Pointer(unsafe.SliceData(req)), uint32(len(req)),
		unsafe.Pointer(unsafe.SliceData(callBuf)), uint32(len(callBuf)), unsafe.Pointer(&n))
	switch status {
	case statusOK:
		return append([]byte(nil), callBuf[:n]...), nil
	case statusShortBuffer:
		resp := make([]byte, n)
		if status := hostResponse(unsafe.Pointer(unsafe.SliceData(resp)), n, unsafe.Pointer(&n)); status != statusOK {
			return nil, callError(name, status, nil)
		}
		return resp[:n], nil
	}
	return nil, callError(name, status, callBuf[:min(n, uint32(len(callBuf)))])
}
