// Command callloop measures host calls from inside a guest: it makes N
// calls of SIZE bytes to bench.echo/v1 (after 200 not counted), timing
// each round trip with the guest's monotonic clock, and prints
// {"n", "p50_ns", "p90_ns", "p99_ns", "total_ns"} on stdout.
//
//	callloop N SIZE
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/cloisterhq/cloister/guest"
)

func main() {
	if len(os.Args) != 3 {
		guest.Fail("usage: callloop N SIZE")
	}
	n, err1 := strconv.Atoi(os.Args[1])
	size, err2 := strconv.Atoi(os.Args[2])
	if err1 != nil || err2 != nil || n <= 0 || size < 0 {
		guest.Fail("callloop: bad N or SIZE")
	}
	req := bytes.Repeat([]byte{0x5a}, size)
	call := func() {
		resp, err := guest.HostCall("bench.echo/v1", req)
		if err != nil || len(resp) != size {
			guest.Fail("callloop: %d bytes back, %v", len(resp), err)
		}
	}
	for range 200 {
		call()
	}
	ds := make([]int64, n)
	start := time.Now()
	for i := range ds {
		t := time.Now()
		call()
		ds[i] = int64(time.Since(t))
	}
	total := int64(time.Since(start))
	slices.Sort(ds)
	out, _ := json.Marshal(map[string]int64{"n": int64(n), "p50_ns": ds[n/2], "p90_ns": ds[n*9/10], "p99_ns": ds[n*99/100], "total_ns": total})
	fmt.Println(string(out))
}
