package main

import "fmt"

var kept [][]byte

// membomb allocates memory until the runtime gives up. In a
// Cloister isolate the memory ceiling refuses the growth and the Go runtime
// dies ("fatal error: out of memory", exit 2); the isolate must report a
// memory outcome (125), not exit status 2.
func membomb() {
	for i := 0; ; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = byte(i)
		}
		kept = append(kept, b)
		if i%64 == 0 {
			fmt.Println("allocated MiB:", i)
		}
	}
}
