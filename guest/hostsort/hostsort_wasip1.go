//go:build wasip1

package hostsort

import "unsafe"

//go:wasmimport cloister_accel_v1 sort_u64
//go:noescape
func hostSortU64(p unsafe.Pointer, n uint32) uint32

//go:wasmimport cloister_accel_v1 sort_i64
//go:noescape
func hostSortI64(p unsafe.Pointer, n uint32) uint32

// Uint64s sorts s in increasing order.
func Uint64s(s []uint64) {
	if len(s) > 1 && hostSortU64(unsafe.Pointer(unsafe.SliceData(s)), uint32(len(s))) != 0 {
		panic("guest/hostsort: the host refused sort_u64")
	}
}

// Int64s sorts s in increasing order.
func Int64s(s []int64) {
	if len(s) > 1 && hostSortI64(unsafe.Pointer(unsafe.SliceData(s)), uint32(len(s))) != 0 {
		panic("guest/hostsort: the host refused sort_i64")
	}
}
