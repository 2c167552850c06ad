package main

import (
	"bytes"
	"fmt"
	"os"
)

// flood writes to /output/ until a write fails, then floods stdout
// and stderr. The isolate must bound the output bytes, keep stdout and stderr
// to their caps, and never touch the host disk.
func flood() {
	f, err := os.Create("/output/flood.bin")
	if err != nil {
		fmt.Println("create:", err)
		os.Exit(1)
	}
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	var total int64
	for {
		n, err := f.Write(chunk)
		total += int64(n)
		if err != nil {
			fmt.Fprintln(os.Stderr, "write error:", err)
			break
		}
	}
	f.Close()
	// A second file gets nothing: the budget is spent.
	_, err2 := os.Create("/output/second.bin")
	g, _ := os.Create("/output/second.bin")
	var n2 int
	var err3 error
	if g != nil {
		n2, err3 = g.Write([]byte("more"))
	}
	fmt.Printf("wrote %d bytes; create second: %v; write second: %d %v\n", total, err2, n2, err3)
	line := bytes.Repeat([]byte("y"), 1<<16)
	for i := 0; i < 512; i++ { // 32 MiB to each stream
		os.Stdout.Write(line)
		os.Stderr.Write(line)
	}
}
