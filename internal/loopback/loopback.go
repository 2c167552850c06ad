// Package loopback finds loopback ports for programs that are told a port
// now and bind it later (ledger testnet validators, swtpm, a node started
// by a test).
package loopback

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
)

// floor is the lowest port Listen picks: below it lie the well-known and
// many registered services' ports.
const floor = 10000

// room is how many ports below the ephemeral range Listen leaves out, so
// that the next few after the one it picks (swtpm's control port, say)
// are below the range too.
const room = 16

// Listen listens on a free 127.0.0.1 port below the kernel's ephemeral
// range, where no other program's port-0 listener or outgoing connection is
// ever given a port: closed again, the port stays free for whoever it is
// told to, unless someone binds that very port. The room ports after it
// are below the range as well. Where the range cannot be read, or leaves no
// space below it, it listens on port 0.
func Listen() (net.Listener, error) {
	low := 0
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &low)
	}
	if low-room-floor >= 1000 {
		for range 64 {
			port := floor + rand.IntN(low-room-floor)
			if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
				return l, nil
			}
		}
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

// Addrs picks n distinct free 127.0.0.1 addresses as Listen does, holding
// each until all are chosen so that none repeats, and returns them closed
// ("127.0.0.1:PORT"), for programs that are told their ports.
func Addrs(n int) ([]string, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	addrs := make([]string, n)
	for i := range addrs {
		l, err := Listen()
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		addrs[i] = l.Addr().String()
	}
	return addrs, nil
}
