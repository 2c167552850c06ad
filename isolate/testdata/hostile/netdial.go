package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

// netdial tries to reach each address given as an argument over
// TCP. WASI preview 1 cannot create sockets (Go's wasip1 port answers with an
// in-guest fake network that reaches nothing outside the guest), so every
// attempt must fail.
func netdial() {
	for _, addr := range os.Args[1:] {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.Close()
			fmt.Printf("dial %s: CONNECTED\n", addr)
		} else {
			fmt.Printf("dial %s: refused: %v\n", addr, err)
		}
	}
}
