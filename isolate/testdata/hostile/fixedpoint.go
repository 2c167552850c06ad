package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"slices"
)

// fixedpoint is integer and fixed-point work whose bytes must not depend
// on the engine: a Q16.16 matrix product, an integer sort and a rolling
// hash, written to /output/fixed.bin and summarised on stdout.
func fixedpoint() {
	const n = 64
	x := uint64(0x9e3779b97f4a7c15)
	next := func() uint64 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x }
	a, b := make([]int64, n*n), make([]int64, n*n)
	for i := range a {
		a[i] = int64(next()%(4<<16)) - 2<<16 // [-2, 2) in Q16.16
		b[i] = int64(next()%(4<<16)) - 2<<16
	}
	c := make([]int64, n*n)
	for i := 0; i < n; i++ {
		for k := 0; k < n; k++ {
			for j := 0; j < n; j++ {
				c[i*n+j] += a[i*n+k] * b[k*n+j] >> 16
			}
		}
	}
	keys := make([]uint32, 10000)
	for i := range keys {
		keys[i] = uint32(next())
	}
	slices.Sort(keys)
	out := make([]byte, 0, 8*len(c)+4*len(keys))
	for _, v := range c {
		out = binary.LittleEndian.AppendUint64(out, uint64(v))
	}
	for _, k := range keys {
		out = binary.LittleEndian.AppendUint32(out, k)
	}
	h := uint64(14695981039346656037)
	for _, v := range out {
		h = (h ^ uint64(v)) * 1099511628211
	}
	if err := os.WriteFile("/output/fixed.bin", out, 0o644); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Printf("fixed-point: %d bytes, fnv %016x, c[0] %d, c[last] %d\n", len(out), h, c[0], c[len(c)-1])
}
