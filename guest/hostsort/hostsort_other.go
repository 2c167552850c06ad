//go:build !wasip1

package hostsort

import "slices"

// Uint64s sorts s in increasing order (outside an isolate: slices.Sort).
func Uint64s(s []uint64) { slices.Sort(s) }

// Int64s sorts s in increasing order (outside an isolate: slices.Sort).
func Int64s(s []int64) { slices.Sort(s) }
